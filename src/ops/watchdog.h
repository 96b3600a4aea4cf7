// ops/: the commit-confirm watchdog, a detached process that reverts an apply --confirm at its
// deadline unless it was confirmed, and the revert of a pending confirm nobody will resolve.
// The record it watches is state/pending.h.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "backend/backend.h"

#include "state/pending.h"
#include "util/status.h"

namespace mw::ops {

/// Arms a commit-confirmed apply BEFORE its batch is committed: starts a detached watchdog (own
/// session, no terminal, SIGHUP ignored, named mailward-watch) that writes the pending record
/// durably and then restores `snapshot` at the deadline (`seconds` from now until
/// state::CommitPending moves it) unless the record is confirmed or disarmed first. Whatever
/// happens to the applying process afterwards, the revert happens. Real processes only (fork).
Status ArmConfirm(const std::string& state_dir, const std::string& snapshot, int seconds);

/// The backend that made a snapshot, given its bytes and the state directory.
using BackendForSnapshotFn = std::function<std::unique_ptr<Backend>(const std::string& bytes, const std::string& state_dir)>;

/// Restores the pending confirm's snapshot (through `backend_for_snapshot`; empty: the real
/// BackendForSnapshot), removes the record (and the snapshot once restored: it is no rollback
/// point any more) and logs "<why>: reverted to ..." or "<why>: REVERT FAILED: ...".
/// REQUIRES: the caller holds the state directory's lock.
Status RevertPending(const std::string& state_dir, const state::PendingConfirm& p, const std::string& why,
                     sys::Env& env = sys::RealEnv(), const BackendForSnapshotFn& backend_for_snapshot = {});

/// The watchdog's life, as process `me` watching the record `last` it wrote: waits for the
/// deadline (an apply may move it while it commits), then takes the state lock and reverts
/// unless the record was confirmed, disarmed or taken over by another watchdog meanwhile.
/// Returns the process's exit code: 0 (nothing to do, or reverted), 1 (the revert failed).
int WatchdogLoop(const std::string& state_dir, int me, state::PendingConfirm last, sys::Env& env,
                 const BackendForSnapshotFn& backend_for_snapshot = {});

}  // namespace mw::ops
