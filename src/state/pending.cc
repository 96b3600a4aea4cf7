#include "state/pending.h"

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <nlohmann/json.hpp>

namespace mw::state {

std::string PendingPath(const std::string& dir) { return dir + "/pending-confirm"; }

bool ReadPending(const std::string& state_dir, PendingConfirm* out, sys::Env& env) {
  auto t = env.ReadFile(PendingPath(state_dir), Follow::kNoSymlinks);
  if (!t.ok()) return false;
  auto j = nlohmann::json::parse(*t, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return false;
  try {
    out->snapshot = j.value("snapshot", "");
    out->deadline = j.value("deadline", 0LL);
    out->deadline_ms = j.value("deadline_ms", 0LL);
    out->pid = j.value("pid", 0);
    out->boot_id = j.value("boot_id", "");
    out->seconds = j.value("seconds", 0);
    out->committed = j.value("committed", false);
  } catch (const nlohmann::json::exception&) {
    return false;  // a field of the wrong type: not a record this version wrote
  }
  // Only ever one of our own snapshots: STATE_DIR/snapshots/<digits>.snap.
  const std::string dir = state_dir + "/snapshots/";
  const std::string& snap = out->snapshot;
  if (snap.size() <= dir.size() + 5 || snap.compare(0, dir.size(), dir) != 0 ||
      snap.compare(snap.size() - 5, 5, ".snap") != 0)
    return false;
  for (size_t i = dir.size(); i + 5 < snap.size(); ++i)
    if (snap[i] < '0' || snap[i] > '9') return false;
  return true;
}

Status WritePending(const std::string& state_dir, const PendingConfirm& p, sys::Env& env) {
  nlohmann::json j = {{"snapshot", p.snapshot}, {"deadline", p.deadline}, {"deadline_ms", p.deadline_ms},
                      {"pid", p.pid},           {"boot_id", p.boot_id},   {"seconds", p.seconds},
                      {"committed", p.committed}};
  return env.WriteFileAtomic(PendingPath(state_dir), j.dump() + "\n", Durability::kFsync);
}

void SetDeadline(PendingConfirm* p, int seconds, sys::Env& env) {
  p->seconds = seconds;
  p->deadline_ms = env.BootMs() + static_cast<long long>(seconds) * 1000;
  p->deadline = static_cast<long long>(env.UnixSeconds()) + seconds;
}

bool PendingRecordExists(const std::string& state_dir, sys::Env& env) {
  return env.Lstat(PendingPath(state_dir)).has_value();
}

void LogConfirm(const std::string& state_dir, const std::string& msg, sys::Env& env) {
  const int64_t now_ms = env.UnixMs();
  std::time_t secs = static_cast<std::time_t>(now_ms / 1000);
  long ms = static_cast<long>(now_ms % 1000);
  char ts[40], full[48];
  std::tm tm{};
  gmtime_r(&secs, &tm);
  std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(full, sizeof full, "%s.%03ldZ", ts, ms);
  env.AppendFile(state_dir + "/confirm.log", std::string(full) + " " + msg + "\n");
}

std::string WatchdogLockPath(const std::string& state_dir, int pid) {
  return state_dir + "/watchdog-" + std::to_string(pid) + ".lock";
}

bool WatchdogAlive(const std::string& state_dir, int pid, sys::Env& env) {
  if (pid <= 0) return false;
  const std::string lock_path = WatchdogLockPath(state_dir, pid);
  if (env.Lstat(lock_path)) {
    auto lock = env.TryLock(lock_path, sys::LockInherit::kNo);
    if (lock.ok()) {
      const bool held = *lock == nullptr;
      if (!held) {
        lock->reset();
        (void)env.RemoveFile(lock_path);  // left by a killed watchdog
      }
      return held;
    }
  }
  // No lock file (a record from an older mailward): a live, not zombie, process of that name.
  auto stat = env.ReadFile("/proc/" + std::to_string(pid) + "/stat");
  if (!stat.ok()) return false;
  size_t open_paren = stat->find('('), close_paren = stat->rfind(')');
  if (open_paren == std::string::npos || close_paren == std::string::npos || close_paren < open_paren ||
      close_paren + 2 >= stat->size())
    return false;
  char state = (*stat)[close_paren + 2];
  return stat->substr(open_paren + 1, close_paren - open_paren - 1) == kWatchdogName && state != 'Z' && state != 'X';
}

bool AnyWatchdogAlive(const std::string& state_dir, sys::Env& env) {
  auto locks = env.ListFiles(state_dir, ".lock");
  if (!locks.ok()) return false;
  const std::string prefix = state_dir + "/watchdog-";
  for (const auto& l : *locks) {
    if (l.compare(0, prefix.size(), prefix) != 0) continue;
    int pid = std::atoi(l.c_str() + prefix.size());
    if (pid > 0 && WatchdogAlive(state_dir, pid, env)) return true;
  }
  return false;
}

bool PendingIsStale(const std::string& state_dir, const PendingConfirm& p, std::string* why, sys::Env& env) {
  std::string boot = sys::BootId(env);
  if (!p.boot_id.empty() && !boot.empty() && p.boot_id != boot) {
    *why = "it was armed before the host rebooted (boot id " + p.boot_id + ")";
    return true;
  }
  if (!WatchdogAlive(state_dir, p.pid, env)) {
    *why = "its watchdog (pid " + std::to_string(p.pid) + ") is gone";
    return true;
  }
  return false;
}

Status CommitPending(const std::string& state_dir, int seconds, sys::Env& env) {
  PendingConfirm p;
  if (!ReadPending(state_dir, &p, env)) return Status::Io(PendingPath(state_dir) + " vanished before the commit was recorded");
  SetDeadline(&p, seconds, env);
  p.committed = true;
  LogConfirm(state_dir, "committed, pending confirmation: reverts to " + p.snapshot + " in " + std::to_string(seconds) +
                            " s unless 'mailward confirm' runs", env);
  return WritePending(state_dir, p, env);
}

void DisarmConfirm(const std::string& state_dir, const std::string& why, sys::Env& env) {
  PendingConfirm p;
  if (!ReadPending(state_dir, &p, env)) return;
  (void)env.RemoveFile(PendingPath(state_dir));
  LogConfirm(state_dir, "disarmed, nothing to revert: " + why, env);
}

bool ConfirmPending(const std::string& state_dir, const std::string& how, sys::Env& env) {
  if (!PendingRecordExists(state_dir, env)) return false;
  // The watchdog sees the record gone and exits; the caller holds the lock, so a revert cannot
  // be half-way through.
  EndPending(state_dir, how, env);
  return true;
}

void EndPending(const std::string& state_dir, const std::string& line, sys::Env& env) {
  (void)env.RemoveFile(PendingPath(state_dir));
  LogConfirm(state_dir, line, env);
}

}  // namespace mw::state
