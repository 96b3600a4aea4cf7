#include "ops/watchdog.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "backend/backend.h"
#include "state/snapshots.h"

namespace mw::ops {

using state::PendingConfirm;
using state::PendingPath;
using state::ReadPending;
using state::WatchdogLockPath;

Status RevertPending(const std::string& state_dir, const PendingConfirm& p, const std::string& why, sys::Env& env,
                     const BackendForSnapshotFn& backend_for_snapshot) {
  auto bytes = env.ReadFile(p.snapshot, Follow::kNoSymlinks);
  Status s = Status::Ok();
  if (!bytes.ok()) {
    s = bytes.status();
  } else {
    auto be = backend_for_snapshot ? backend_for_snapshot(*bytes, state_dir)
                                   : BackendForSnapshot(*bytes, BackendConfig{state_dir, &env});
    s = be->Restore(*bytes, ReadAttachment(p.snapshot, env));
  }
  state::LogConfirm(state_dir, s.ok() ? why + ": reverted to " + p.snapshot : why + ": REVERT FAILED: " + s.message(), env);
  if (s.ok()) RemoveSnapshot(p.snapshot, env);
  (void)env.RemoveFile(PendingPath(state_dir));  // last: once the record is gone, the revert is complete
  return s;
}

namespace {

long long BootMs() { return sys::RealEnv().BootMs(); }

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
    // (It waits as long as it takes; a lock file that cannot be opened is no reason not to revert.)
    auto lock = sys::RealEnv().LockFile(state_dir + "/lock", 1e9, 50, sys::LockInherit::kNo, "");
    if (!still_mine()) leave(0);  // confirmed meanwhile
    if (last.deadline_ms > BootMs()) continue;  // an apply moved the deadline: `lock` is released here
    Status s = RevertPending(state_dir, last, "not confirmed in time", sys::RealEnv());
    leave(s.ok() ? 0 : 1);
  }
}

}  // namespace

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
    prctl(PR_SET_NAME, state::kWatchdogName, 0, 0, 0);
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
    p.boot_id = state::BootId();
    state::SetDeadline(&p, seconds);
    Status w = state::WritePending(state_dir, p);
    char ok = w.ok() ? 'y' : 'n';
    (void)!write(ready[1], &ok, 1);
    close(ready[1]);
    if (!w.ok()) {
      unlink(WatchdogLockPath(state_dir, p.pid).c_str());
      _exit(1);
    }
    state::LogConfirm(state_dir, "armed before the commit (watchdog pid " + std::to_string(p.pid) + "): reverts to " + snapshot +
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

}  // namespace mw::ops
