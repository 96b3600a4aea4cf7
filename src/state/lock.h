// state/: the state directory's lock (STATE_DIR/lock) and the check that mailward's own entries
// in the directory are what mailward wrote (no symlinks, no FIFOs planted by others).
#pragma once

#include <memory>
#include <string>

#include "sys/env.h"
#include "util/status.h"

namespace mw::state {

/// mailward's own files in the state directory are regular files (snapshots/ a directory) or
/// absent: a symlink or a FIFO planted at one would make root write, append or read elsewhere.
/// Code::kRefused naming the entry and how to remove it.
Status CheckStateEntries(const std::string& dir, sys::Env& env = sys::RealEnv());

/// The exclusive lock on a state directory, held while the handle lives (move-only: one owner
/// of the lock's descriptor). Every command that changes the firewall or the state directory
/// holds it: apply, confirm, rollback, remove, and the confirm watchdog at its deadline.
class StateLock {
 public:
  /// Creates the directory if needed, refuses it when others can change it (CheckTrusted) or
  /// when one of mailward's entries is not a file mailward wrote, then takes STATE_DIR/lock,
  /// waiting up to `timeout_s` seconds: Code::kBusy when another mailward keeps holding it,
  /// Code::kRefused for a timeout that is negative or not a number.
  static Result<StateLock> Acquire(const std::string& dir, double timeout_s, sys::Env& env = sys::RealEnv());

  StateLock(StateLock&&) = default;
  StateLock& operator=(StateLock&&) = default;
  StateLock(const StateLock&) = delete;
  StateLock& operator=(const StateLock&) = delete;

 private:
  explicit StateLock(std::unique_ptr<sys::FileLock> lock) : lock_(std::move(lock)) {}
  std::unique_ptr<sys::FileLock> lock_;
};

}  // namespace mw::state
