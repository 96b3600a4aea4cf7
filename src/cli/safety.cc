#include "cli/safety.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <sys/prctl.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <algorithm>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "backend/backend.h"
#include "state/snapshots.h"
#include "util/fs.h"

// Defined only by the test-hook library the integration tests preload (tests/hooks); null in
// production, where TestPausePoint does nothing.
extern "C" void mailward_test_pause_point(const char* point) __attribute__((weak));

namespace mw {
namespace {

std::string PendingPath(const std::string& dir) { return dir + "/pending-confirm"; }

/// Exactly 8 hex digits into a u32; false on anything else (no exception on a malformed row).
bool ParseHex32(const std::string& hex, uint32_t* out) {
  if (hex.size() != 8) return false;
  uint32_t v = 0;
  for (char c : hex) {
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (d < 0) return false;
    v = v << 4 | static_cast<uint32_t>(d);
  }
  *out = v;
  return true;
}

/// "0100007F:0016" style address from /proc/net/tcp into text; IPv6 in 4 host-order words.
/// "" when it is not one (the row is skipped).
std::string ProcAddr(const std::string& hex) {
  if (hex.size() == 8) {
    uint32_t v = 0;
    if (!ParseHex32(hex, &v)) return "";
    in_addr a{v};  // already in network order as the kernel printed the raw u32
    char buf[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a, buf, sizeof buf);
    return buf;
  }
  if (hex.size() == 32) {
    in6_addr a;
    for (int w = 0; w < 4; ++w) {
      uint32_t v = 0;
      if (!ParseHex32(hex.substr(w * 8, 8), &v)) return "";
      std::memcpy(&a.s6_addr[w * 4], &v, 4);
    }
    char buf[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, &a, buf, sizeof buf);
    std::string s = buf;
    if (s.rfind("::ffff:", 0) == 0 && s.find('.') != std::string::npos) s = s.substr(7);  // v4-mapped
    return s;
  }
  return "";
}

}  // namespace

namespace {

struct TcpLine {
  std::string local, remote, state;
  uint16_t lport = 0;
  uint64_t inode = 0;
};

/// The rows of /proc/net/tcp{,6} texts; malformed rows are skipped.
std::vector<TcpLine> ParseTcp(const std::vector<std::string>& texts) {
  std::vector<TcpLine> out;
  for (const auto& text : texts) {
    std::istringstream in(text);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string sl, txrx, trtm, retr, uid, timeout, inode;
      TcpLine t;
      if (!(f >> sl >> t.local >> t.remote >> t.state)) continue;
      if (f >> txrx >> trtm >> retr >> uid >> timeout >> inode) t.inode = std::strtoull(inode.c_str(), nullptr, 10);
      auto lc = t.local.find(':');
      if (lc == std::string::npos || t.remote.find(':') == std::string::npos) continue;
      char* end = nullptr;
      unsigned long v = std::strtoul(t.local.c_str() + lc + 1, &end, 16);
      if (end == t.local.c_str() + lc + 1 || v > 65535) continue;
      t.lport = static_cast<uint16_t>(v);
      out.push_back(std::move(t));
    }
  }
  return out;
}

}  // namespace

std::vector<SshSession> FindSshSessions(const char* ssh_connection, const std::vector<std::string>& proc_net_tcp,
                                        const std::set<uint64_t>& sshd_inodes) {
  std::vector<SshSession> out;
  std::vector<uint16_t> ports = {22};
  if (ssh_connection && *ssh_connection) {
    std::istringstream in(ssh_connection);
    std::string client, cport, server;
    unsigned sport = 0;
    if (in >> client >> cport >> server >> sport && sport > 0 && sport < 65536) {
      out.push_back({client, static_cast<uint16_t>(sport), "SSH_CONNECTION"});
      if (sport != 22) ports.push_back(static_cast<uint16_t>(sport));
    }
  }
  auto rows = ParseTcp(proc_net_tcp);
  // The ports sshd listens on, whatever they are.
  std::vector<uint16_t> sshd_ports;
  for (const auto& r : rows)
    if (r.state == "0A" && r.inode && sshd_inodes.count(r.inode)) sshd_ports.push_back(r.lport);
  for (const auto& r : rows) {
    if (r.state != "01") continue;  // ESTABLISHED
    bool by_sshd = (r.inode && sshd_inodes.count(r.inode)) ||
                   std::find(sshd_ports.begin(), sshd_ports.end(), r.lport) != sshd_ports.end();
    if (!by_sshd && std::find(ports.begin(), ports.end(), r.lport) == ports.end()) continue;
    std::string client = ProcAddr(r.remote.substr(0, r.remote.find(':')));
    if (client.empty()) continue;
    bool dup = false;
    for (const auto& s : out) dup |= s.client == client && s.port == r.lport;
    if (!dup) out.push_back({client, r.lport, by_sshd ? "sshd" : "/proc/net/tcp"});
  }
  return out;
}

std::set<uint64_t> SshdSocketInodes() {
  std::set<uint64_t> out;
  DIR* d = opendir("/proc");
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::string dir = std::string("/proc/") + e->d_name;
    auto comm = ReadFile(dir + "/comm");
    if (!comm.ok()) continue;
    std::string c = *comm;
    if (!c.empty() && c.back() == '\n') c.pop_back();
    if (c != "sshd" && c.rfind("sshd-", 0) != 0) continue;  // sshd, sshd-session (OpenSSH >= 9.8)
    DIR* fds = opendir((dir + "/fd").c_str());
    if (!fds) continue;
    while (dirent* f = readdir(fds)) {
      if (f->d_name[0] == '.') continue;
      char target[64];
      ssize_t n = readlink((dir + "/fd/" + f->d_name).c_str(), target, sizeof target - 1);
      if (n <= 0) continue;
      target[n] = 0;
      unsigned long long inode = 0;
      if (std::sscanf(target, "socket:[%llu]", &inode) == 1) out.insert(inode);
    }
    closedir(fds);
  }
  closedir(d);
  return out;
}

namespace {

std::vector<std::string> ReadProcNetTcp() {
  std::vector<std::string> texts;
  for (const char* p : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    auto t = ReadFile(p);
    if (t.ok()) texts.push_back(*t);
  }
  return texts;
}

}  // namespace

std::vector<SshSession> FindSshSessions() {
  auto texts = ReadProcNetTcp();
  return FindSshSessions(std::getenv("SSH_CONNECTION"), texts, SshdSocketInodes());
}

std::vector<SshSession> SshSessionsFor(const Policy& policy) {
  // sshd may listen on any port, so any closed port may cut a session. Only a policy that
  // closes nothing, or a host with no established connection to a port the policy closes, can
  // skip looking for sshd's sockets in /proc/*/fd.
  std::vector<uint16_t> closed;
  for (const auto& p : policy.ports)
    if (p.state == PortState::kClosed) closed.push_back(p.port);
  const char* env = std::getenv("SSH_CONNECTION");
  if (closed.empty()) return FindSshSessions(env, {});
  auto texts = ReadProcNetTcp();
  bool candidate = false;
  for (const auto& r : ParseTcp(texts))
    candidate |= r.state == "01" && std::find(closed.begin(), closed.end(), r.lport) != closed.end();
  return FindSshSessions(env, texts, candidate ? SshdSocketInodes() : std::set<uint64_t>{});
}

Status CheckLockout(const Policy& policy, const std::vector<SshSession>& sessions) {
  for (const auto& s : sessions) {
    for (const auto& p : policy.ports) {
      if (p.port != s.port || p.state != PortState::kClosed) continue;
      bool loopback = s.client.rfind("127.", 0) == 0 || s.client == "::1";  // loopback is exempt
      if (loopback || InAllowlists(policy, p, s.client)) continue;
      return Status::Error(Code::kRefused,
                           "refusing to apply: the policy closes port " + std::to_string(s.port) + " ('" + p.name +
                               "' at " + p.where.ToString() + ") to " + s.client + ", which is connected over SSH to "
                               "that port right now (" + s.source + "); this would lock the session out. Add " +
                               s.client + " to one of its allow lists, or pass --force if you really mean it; nothing "
                               "was applied");
    }
  }
  return Status::Ok();
}

bool ReadPending(const std::string& state_dir, PendingConfirm* out) {
  auto t = ReadFile(PendingPath(state_dir), Follow::kNoSymlinks);
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

bool PendingRecordExists(const std::string& state_dir) {
  struct stat st;
  return lstat(PendingPath(state_dir).c_str(), &st) == 0;
}

std::string BootId() {
  auto t = ReadFile("/proc/sys/kernel/random/boot_id");
  if (!t.ok()) return "";
  std::string s = *t;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

long long BootMs() {
  timespec ts{};
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<long long>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

void TestPausePoint(const char* point) {
  if (mailward_test_pause_point) mailward_test_pause_point(point);
}

namespace {

constexpr char kWatchdogName[] = "mailward-watch";

/// Each watchdog holds an exclusive flock on STATE_DIR/watchdog-<pid>.lock for its whole life:
/// whether it still lives can be told without /proc (which a sandbox may hide) and without
/// trusting that a pid was not reused.
std::string WatchdogLockPath(const std::string& state_dir, int pid) {
  return state_dir + "/watchdog-" + std::to_string(pid) + ".lock";
}

void Log(const std::string& state_dir, const std::string& msg) {
  std::string path = state_dir + "/confirm.log";
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return;
  auto now = std::chrono::system_clock::now();
  std::time_t secs = std::chrono::system_clock::to_time_t(now);
  long ms = static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000);
  char ts[40], full[48];
  std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", std::gmtime(&secs));
  std::snprintf(full, sizeof full, "%s.%03ldZ", ts, ms);
  std::string line = std::string(full) + " " + msg + "\n";
  (void)!write(fd, line.data(), line.size());
  close(fd);
}

Status WritePending(const std::string& state_dir, const PendingConfirm& p) {
  nlohmann::json j = {{"snapshot", p.snapshot}, {"deadline", p.deadline}, {"deadline_ms", p.deadline_ms},
                      {"pid", p.pid},           {"boot_id", p.boot_id},   {"seconds", p.seconds},
                      {"committed", p.committed}};
  return WriteFileAtomic(PendingPath(state_dir), j.dump() + "\n", Durability::kFsync);
}

void SetDeadline(PendingConfirm* p, int seconds) {
  p->seconds = seconds;
  p->deadline_ms = BootMs() + static_cast<long long>(seconds) * 1000;
  p->deadline = static_cast<long long>(std::time(nullptr)) + seconds;
}

/// Restores the pending confirm's snapshot, removes the record (and the snapshot once restored:
/// it is no rollback point any more) and logs "<why>: reverted to ..." or "...: REVERT FAILED".
Status RevertPending(const std::string& state_dir, const PendingConfirm& p, const std::string& why) {
  auto bytes = ReadFile(p.snapshot, Follow::kNoSymlinks);
  Status s = bytes.ok() ? BackendForSnapshot(*bytes, BackendConfig{state_dir})->Restore(*bytes, ReadAttachment(p.snapshot))
                        : bytes.status();
  Log(state_dir, s.ok() ? why + ": reverted to " + p.snapshot : why + ": REVERT FAILED: " + s.message());
  if (s.ok()) RemoveSnapshot(p.snapshot);
  unlink(PendingPath(state_dir).c_str());  // last: once the record is gone, the revert is complete
  return s;
}

/// Whether the pending record is gone for sure (not merely unreadable for a moment).
bool RecordGone(const std::string& state_dir) {
  struct stat st;
  return lstat(PendingPath(state_dir).c_str(), &st) != 0 && errno == ENOENT;
}

/// The watchdog's life: wait for the deadline (it may move while the apply commits), then
/// revert unless the record was confirmed, disarmed or taken over. A record that cannot be read
/// for a moment is not a confirmation: the last one read stays in force. Never returns.
[[noreturn]] void Watchdog(const std::string& state_dir, PendingConfirm last) {
  const int me = getpid();
  auto leave = [&](int code) {
    unlink(WatchdogLockPath(state_dir, me).c_str());
    _exit(code);
  };
  // Confirmed, disarmed or superseded: false. Otherwise refreshes `last`.
  auto still_mine = [&]() {
    PendingConfirm p;
    if (ReadPending(state_dir, &p)) {
      if (p.pid != me) return false;
      last = p;
      return true;
    }
    return !RecordGone(state_dir);
  };
  for (;;) {
    if (!still_mine()) leave(0);
    long long left = last.deadline_ms - BootMs();
    if (left > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min(left, 100LL)));
      continue;
    }
    // Take the apply lock so the revert never interleaves with an apply, a confirm or a
    // rollback. An apply still holding it is still committing: it moves the deadline.
    int lock = open((state_dir + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (lock >= 0) flock(lock, LOCK_EX);
    if (!still_mine()) leave(0);  // confirmed meanwhile
    if (last.deadline_ms > BootMs()) {
      if (lock >= 0) close(lock);
      continue;
    }
    Status s = RevertPending(state_dir, last, "not confirmed in time");
    leave(s.ok() ? 0 : 1);
  }
}

bool WatchdogAlive(const std::string& state_dir, int pid) {
  if (pid <= 0) return false;
  std::string lock_path = WatchdogLockPath(state_dir, pid);
  int fd = open(lock_path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd >= 0) {
    bool held = flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    if (!held) unlink(lock_path.c_str());  // left by a killed watchdog
    close(fd);
    return held;
  }
  // No lock file (a record from an older mailward): a live, not zombie, process of that name.
  auto stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  if (!stat.ok()) return false;
  size_t open_paren = stat->find('('), close_paren = stat->rfind(')');
  if (open_paren == std::string::npos || close_paren == std::string::npos || close_paren < open_paren ||
      close_paren + 2 >= stat->size())
    return false;
  char state = (*stat)[close_paren + 2];
  return stat->substr(open_paren + 1, close_paren - open_paren - 1) == kWatchdogName && state != 'Z' && state != 'X';
}

}  // namespace

bool AnyWatchdogAlive(const std::string& state_dir) {
  auto locks = ListFiles(state_dir, ".lock");
  if (!locks.ok()) return false;
  const std::string prefix = state_dir + "/watchdog-";
  for (const auto& l : *locks) {
    if (l.compare(0, prefix.size(), prefix) != 0) continue;
    int pid = std::atoi(l.c_str() + prefix.size());
    if (pid > 0 && WatchdogAlive(state_dir, pid)) return true;
  }
  return false;
}

bool PendingIsStale(const std::string& state_dir, const PendingConfirm& p, std::string* why) {
  std::string boot = BootId();
  if (!p.boot_id.empty() && !boot.empty() && p.boot_id != boot) {
    *why = "it was armed before the host rebooted (boot id " + p.boot_id + ")";
    return true;
  }
  if (!WatchdogAlive(state_dir, p.pid)) {
    *why = "its watchdog (pid " + std::to_string(p.pid) + ") is gone";
    return true;
  }
  return false;
}

Status ResolveStalePending(const std::string& state_dir, const PendingConfirm& p, const std::string& why) {
  return RevertPending(state_dir, p, "stale pending confirmation (" + why + ")");
}

Status ArmConfirm(const std::string& state_dir, const std::string& snapshot, int seconds) {
  int ready[2];
  if (pipe(ready) != 0) return Status::Io(std::string("cannot start the confirm watchdog: pipe failed: ") + std::strerror(errno));
  pid_t child = fork();
  if (child < 0) {
    close(ready[0]);
    close(ready[1]);
    return Status::Io(std::string("cannot start the confirm watchdog: fork failed: ") + std::strerror(errno));
  }
  if (child == 0) {
    // First child: a new session (no controlling terminal), then fork again so the watchdog is
    // not a session leader and is reparented away from the caller.
    setsid();
    pid_t grandchild = fork();
    if (grandchild != 0) _exit(grandchild < 0 ? 1 : 0);
    signal(SIGHUP, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_NAME, kWatchdogName, 0, 0, 0);
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    // Drop every inherited descriptor (the caller's lock among them) except the ready pipe.
    unsigned keep = static_cast<unsigned>(ready[1]);
    if ((keep > 3 && close_range(3, keep - 1, 0) != 0) || close_range(keep + 1, ~0U, 0) != 0) {
      long max_fd = sysconf(_SC_OPEN_MAX);
      if (max_fd < 0 || max_fd > 65536) max_fd = 65536;
      for (int fd = 3; fd < max_fd; ++fd)
        if (fd != ready[1]) close(fd);
    }
    // Hold our liveness lock, record ourselves as the pending watchdog (durably), then tell
    // the caller.
    PendingConfirm p;
    p.snapshot = snapshot;
    p.pid = getpid();
    int alive_fd = open(WatchdogLockPath(state_dir, p.pid).c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (alive_fd < 0 || flock(alive_fd, LOCK_EX) != 0) {
      char no = 'n';
      (void)!write(ready[1], &no, 1);
      _exit(1);
    }
    p.boot_id = BootId();
    SetDeadline(&p, seconds);
    Status w = WritePending(state_dir, p);
    char ok = w.ok() ? 'y' : 'n';
    (void)!write(ready[1], &ok, 1);
    close(ready[1]);
    if (!w.ok()) {
      unlink(WatchdogLockPath(state_dir, p.pid).c_str());
      _exit(1);
    }
    Log(state_dir, "armed before the commit (watchdog pid " + std::to_string(p.pid) + "): reverts to " + snapshot +
                       " unless confirmed within " + std::to_string(seconds) + " s of the commit");
    Watchdog(state_dir, p);
  }
  close(ready[1]);
  int status = 0;
  waitpid(child, &status, 0);
  char ok = 'n';
  ssize_t n = read(ready[0], &ok, 1);
  close(ready[0]);
  if (n != 1 || ok != 'y')
    return Status::Io("cannot start the confirm watchdog (it could not write " + PendingPath(state_dir) + ")");
  return Status::Ok();
}

Status CommitPending(const std::string& state_dir, int seconds) {
  PendingConfirm p;
  if (!ReadPending(state_dir, &p)) return Status::Io(PendingPath(state_dir) + " vanished before the commit was recorded");
  SetDeadline(&p, seconds);
  p.committed = true;
  Log(state_dir, "committed, pending confirmation: reverts to " + p.snapshot + " in " + std::to_string(seconds) +
                     " s unless 'mailward confirm' runs");
  return WritePending(state_dir, p);
}

void DisarmConfirm(const std::string& state_dir, const std::string& why) {
  PendingConfirm p;
  if (!ReadPending(state_dir, &p)) return;
  unlink(PendingPath(state_dir).c_str());
  Log(state_dir, "disarmed, nothing to revert: " + why);
}

bool ConfirmPending(const std::string& state_dir, const std::string& how) {
  if (!PendingRecordExists(state_dir)) return false;
  // The watchdog sees the record gone and exits; the caller holds the lock, so a revert cannot
  // be half-way through.
  EndPending(state_dir, how);
  return true;
}

void EndPending(const std::string& state_dir, const std::string& line) {
  unlink(PendingPath(state_dir).c_str());
  Log(state_dir, line);
}

}  // namespace mw
