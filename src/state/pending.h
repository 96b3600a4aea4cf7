// state/: the pending commit-confirm record (STATE_DIR/pending-confirm), its log
// (STATE_DIR/confirm.log) and the watchdogs' liveness locks (STATE_DIR/watchdog-<pid>.lock).
// Everything here goes through sys::Env; the watchdog process itself is ops/watchdog.h.
#pragma once

#include <string>

#include "sys/env.h"
#include "util/status.h"

namespace mw::state {

/// A pending commit-confirmed apply: STATE_DIR/pending-confirm.
struct PendingConfirm {
  std::string snapshot;      ///< the snapshot to restore
  long long deadline = 0;    ///< unix seconds, for people (the watchdog uses deadline_ms)
  long long deadline_ms = 0; ///< CLOCK_BOOTTIME milliseconds: immune to clock steps
  int pid = 0;               ///< the watchdog
  std::string boot_id;       ///< /proc/sys/kernel/random/boot_id when it was armed
  int seconds = 0;           ///< the --confirm time
  bool committed = false;    ///< the apply committed (the deadline counts from the commit)
};

std::string PendingPath(const std::string& state_dir);

/// False when there is none, or it is not a record mailward wrote (unparsable, or its snapshot
/// is not one of STATE_DIR/snapshots/<digits>.snap).
bool ReadPending(const std::string& state_dir, PendingConfirm* out, sys::Env& env = sys::RealEnv());
/// Writes the record durably (atomic rename, fsynced).
Status WritePending(const std::string& state_dir, const PendingConfirm& p, sys::Env& env = sys::RealEnv());
/// The deadline becomes `seconds` from now (boot clock, and unix time for people).
void SetDeadline(PendingConfirm* p, int seconds, sys::Env& env = sys::RealEnv());

/// Whether STATE_DIR/pending-confirm exists at all (readable or not). A record that exists but
/// cannot be read is still a pending confirm to its watchdog.
bool PendingRecordExists(const std::string& state_dir, sys::Env& env = sys::RealEnv());

/// Appends a timestamped line to STATE_DIR/confirm.log.
void LogConfirm(const std::string& state_dir, const std::string& msg, sys::Env& env = sys::RealEnv());

/// Each watchdog holds an exclusive lock on STATE_DIR/watchdog-<pid>.lock for its whole life:
/// whether it still lives can be told without /proc (which a sandbox may hide) and without
/// trusting that a pid was not reused.
std::string WatchdogLockPath(const std::string& state_dir, int pid);
/// The process name a watchdog gives itself.
inline constexpr char kWatchdogName[] = "mailward-watch";
/// Whether watchdog `pid` still runs (removes the lock file a killed one left).
bool WatchdogAlive(const std::string& state_dir, int pid, sys::Env& env = sys::RealEnv());
/// Whether any watchdog of this state directory still runs (holds its watchdog-<pid>.lock).
bool AnyWatchdogAlive(const std::string& state_dir, sys::Env& env = sys::RealEnv());

/// A pending confirm nobody will ever resolve: armed in another boot, or its watchdog process
/// is gone (it no longer holds STATE_DIR/watchdog-<pid>.lock). `why` says which.
bool PendingIsStale(const std::string& state_dir, const PendingConfirm& p, std::string* why,
                    sys::Env& env = sys::RealEnv());

/// The batch committed: the deadline becomes `seconds` from now.
Status CommitPending(const std::string& state_dir, int seconds, sys::Env& env = sys::RealEnv());

/// The apply changed nothing or put the old state back itself: the watchdog exits without
/// reverting. `why` goes to confirm.log.
void DisarmConfirm(const std::string& state_dir, const std::string& why, sys::Env& env = sys::RealEnv());

/// Confirms: removes the pending record (a damaged one too), so the watchdog exits without
/// reverting, and logs `how` ("confirmed" by default). False when nothing was pending.
/// REQUIRES: the caller holds the state directory's lock.
bool ConfirmPending(const std::string& state_dir, const std::string& how = "confirmed", sys::Env& env = sys::RealEnv());

/// Ends a pending confirm some other way (a rollback): removes the record and logs `line`.
void EndPending(const std::string& state_dir, const std::string& line, sys::Env& env = sys::RealEnv());

}  // namespace mw::state
