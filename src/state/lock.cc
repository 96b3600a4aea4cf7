#include "state/lock.h"

#include <algorithm>
#include <cmath>

namespace mw::state {

Status CheckStateEntries(const std::string& dir, sys::Env& env) {
  auto bad = [&](const std::string& p, const char* what) {
    return Status::Error(Code::kRefused, p + " is " + what + ", not a file mailward wrote: mailward never follows links "
                                         "in its state directory; remove it (rm " + p + ") and run again");
  };
  auto check = [&](const std::string& p, bool want_dir) -> Status {
    auto kind = env.Lstat(p);
    if (!kind) return Status::Ok();
    if (*kind == sys::EntryKind::kSymlink) return bad(p, "a symlink");
    if (want_dir ? *kind != sys::EntryKind::kDirectory : *kind != sys::EntryKind::kRegular)
      return bad(p, want_dir ? "not a directory" : "not a regular file");
    return Status::Ok();
  };
  for (const char* name : {"lock", "confirm.log", "pending-confirm", "nft-elements.cache", "last-apply"})
    MW_RETURN_IF_ERROR(check(dir + "/" + name, false));
  std::string snaps = dir + "/snapshots";
  MW_RETURN_IF_ERROR(check(snaps, true));
  for (const auto& n : env.ListEntries(snaps)) MW_RETURN_IF_ERROR(check(snaps + "/" + n, false));
  return Status::Ok();
}

Result<StateLock> StateLock::Acquire(const std::string& dir, double timeout, sys::Env& env) {
  if (!std::isfinite(timeout) || timeout < 0)
    return Status::Error(Code::kRefused, "--lock-timeout must be a number of seconds from 0 to 86400");
  MW_RETURN_IF_ERROR(env.MakeDirs(dir));
  // Root writes snapshots, the lock and logs here: a directory others can change is refused.
  MW_RETURN_IF_ERROR(env.CheckTrusted(dir, TrustedKind::kStateDir));
  MW_RETURN_IF_ERROR(CheckStateEntries(dir, env));
  const std::string path = dir + "/lock";
  // (A wait longer than ~30 years is a wait forever; the clamp keeps the milliseconds in range.)
  auto lock = env.LockFile(path, std::min(timeout, 1e9), 50, sys::LockInherit::kNo,
                           "another mailward is applying (lock " + path + " held for more than " +
                               std::to_string(static_cast<int>(timeout)) + " s); nothing was applied");
  if (!lock.ok()) {
    if (lock.status().code() == Code::kIo) return Status::Io(path + ": cannot open the lock file: " + lock.status().message());
    return lock.status();
  }
  return StateLock(std::move(lock.value()));
}

}  // namespace mw::state
