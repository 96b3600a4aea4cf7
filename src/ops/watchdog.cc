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

int WatchdogLoop(const std::string& state_dir, int me, PendingConfirm last, sys::Env& env,
                 const BackendForSnapshotFn& backend_for_snapshot) {
  // Confirmed, disarmed or superseded: false. Otherwise refreshes `last`. A record that cannot
  // be read for a moment (but is there) keeps the last reading in force.
  auto still_mine = [&]() {
    PendingConfirm p;
    if (ReadPending(state_dir, &p, env)) {
      if (p.pid != me) return false;
      last = p;
      return true;
    }
    return env.Lstat(PendingPath(state_dir)).has_value();
  };
  for (;;) {
    if (!still_mine()) return 0;
    const int64_t left = last.deadline_ms - env.BootMs();
    if (left > 0) {
      env.SleepMs(std::min<int64_t>(left, 100));
      continue;
    }
    // Take the apply lock so the revert never interleaves with an apply, a confirm or a
    // rollback. An apply still holding it is still committing: it moves the deadline.
    // (It waits as long as it takes; a lock file that cannot be opened is no reason not to revert.)
    auto lock = env.LockFile(state_dir + "/lock", 1e9, 50, sys::LockInherit::kNo, "");
    if (!still_mine()) return 0;                        // confirmed meanwhile
    if (last.deadline_ms > env.BootMs()) continue;      // an apply moved the deadline: `lock` is released here
    Status s = RevertPending(state_dir, last, "not confirmed in time", env, backend_for_snapshot);
    return s.ok() ? 0 : 1;
  }
}

namespace {

/// The watchdog process's life (WatchdogLoop on the real system), then its exit. Never returns.
[[noreturn]] void Watchdog(const std::string& state_dir, PendingConfirm last) {
  const int me = getpid();
  const int code = WatchdogLoop(state_dir, me, std::move(last), sys::RealEnv());
  unlink(WatchdogLockPath(state_dir, me).c_str());
  _exit(code);
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
    p.boot_id = sys::BootId(sys::RealEnv());
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
