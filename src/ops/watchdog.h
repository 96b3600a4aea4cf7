// ops/: the commit-confirm watchdog, a detached process that reverts an apply --confirm at its
// deadline unless it was confirmed, and the revert of a pending confirm nobody will resolve.
// The record it watches is state/pending.h.
#pragma once

#include <string>

#include "state/pending.h"
#include "util/status.h"

namespace mw::ops {

/// Arms a commit-confirmed apply BEFORE its batch is committed: starts a detached watchdog (own
/// session, no terminal, SIGHUP ignored, named mailward-watch) that writes the pending record
/// durably and then restores `snapshot` at the deadline (`seconds` from now until
/// state::CommitPending moves it) unless the record is confirmed or disarmed first. Whatever
/// happens to the applying process afterwards, the revert happens. Real processes only (fork).
Status ArmConfirm(const std::string& state_dir, const std::string& snapshot, int seconds);

/// Restores the pending confirm's snapshot, removes the record (and the snapshot once restored:
/// it is no rollback point any more) and logs "<why>: reverted to ..." or "...: REVERT FAILED".
Status RevertPending(const std::string& state_dir, const state::PendingConfirm& p, const std::string& why,
                     sys::Env& env = sys::RealEnv());

/// Resolves a stale pending confirm as not confirmed: restores its snapshot (the last confirmed
/// state), removes the record and logs it. REQUIRES: the caller holds the state directory's lock.
Status ResolveStalePending(const std::string& state_dir, const state::PendingConfirm& p, const std::string& why,
                           sys::Env& env = sys::RealEnv());

}  // namespace mw::ops
