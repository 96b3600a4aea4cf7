// ops/: the transactions every changing command runs: apply (lock, pending confirm, plan,
// snapshot, commit-confirm arming, apply, re-plan when someone else committed, verify
// read-back, restore its own commit), confirm, rollback and remove. The CLI parses, calls one
// of these and renders what it returns; nothing here prints.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "state/lock.h"
#include "state/snapshots.h"
#include "sys/env.h"
#include "util/status.h"

namespace mw::ops {

/// How many times an apply re-plans when the live state moved between its plan and its commit
/// (another process committed) before it gives up.
inline constexpr int kMaxApplyAttempts = 5;

/// What the transactions reach outside themselves; the defaults are the real ones, unit tests
/// put fakes in (tests/fakes/fake_env.h, tests/fakes/fake_backend.h).
struct Seams {
  sys::Env* env = &sys::RealEnv();
  /// Starts the commit-confirm watchdog (ops/watchdog.h ArmConfirm).
  std::function<Status(const std::string& state_dir, const std::string& snapshot, int seconds)> arm_confirm;
  /// The backend that made a snapshot (backend.h BackendForSnapshot).
  std::function<std::unique_ptr<Backend>(const std::string& bytes, const std::string& state_dir)> backend_for_snapshot;
};
/// The real seams, with every function set.
Seams RealSeams();

struct ApplyRequest {
  std::string state_dir;
  double lock_timeout = 60;
  PlanOptions plan_options;
  SnapshotInfo info;  ///< saved beside the rollback point
  int confirm_seconds = 0;   ///< > 0: arm the commit-confirm watchdog before the commit
};

struct ApplyOutcome {
  std::optional<state::StateLock> lock;  ///< still held: the caller probes and confirms under it
  std::unique_ptr<BackendPlan> plan;     ///< the plan applied (in sync: nothing was applied)
  bool armed = false;                    ///< a commit-confirm watchdog waits for `mailward confirm`
  std::vector<std::string> notes;        ///< what was resolved on the way (a stale pending confirm)
};

/// The apply transaction. Takes the state directory's lock; refuses (Code::kRefused) while an
/// earlier apply --confirm is pending; resolves a stale one (reverting it) and uncommitted
/// snapshots; then plans against `desired`. A plan in sync applies nothing. Otherwise: saves a
/// snapshot (uncommitted), arms the watchdog when confirming, applies; when the live state
/// moved (Code::kGenerationMoved) it drops that snapshot and re-plans, up to
/// kMaxApplyAttempts plans in all. After the commit it reads back: a differing read-back is
/// undone with RestoreOwnCommit and fails with Code::kVerifyFailed (exit code 3).
Result<ApplyOutcome> Apply(Backend& be, const Ruleset& desired, const ApplyRequest& req, const Seams& seams = RealSeams());

/// Whether an armed apply --confirm may confirm itself (--auto-confirm): `why` is empty when
/// its checks passed and its deadline has not passed yet; then the record is confirmed.
struct AutoConfirm {
  bool confirmed = false;
  std::string why;  ///< why not
};
AutoConfirm MaybeAutoConfirm(const std::string& state_dir, bool auto_confirm, bool probes_ok, bool lockout_ok,
                             const Seams& seams = RealSeams());

/// `mailward confirm`: under the lock, confirms the pending apply. A stale one is reverted and
/// refused; nothing pending is refused (Code::kRefused).
Status Confirm(const std::string& state_dir, double lock_timeout, const Seams& seams = RealSeams());

/// The snapshot a rollback restores: the newest, or `to`'s (Code::kNotFound otherwise).
Result<SnapshotFile> PickSnapshot(const std::string& state_dir, std::optional<uint64_t> to,
                                         const std::vector<SnapshotFile>& snaps);

struct RollbackPreview {
  SnapshotFile snapshot;
  std::string backend;
  std::vector<Change> changes;  ///< what the restore would change now
  size_t dropped = 0;           ///< later rollback points it would drop
};
/// `rollback --dry-run`: reads only (no lock, no change).
Result<RollbackPreview> PreviewRollback(const std::string& state_dir, std::optional<uint64_t> to,
                                        const PlanOptions& opts, const Seams& seams = RealSeams());

/// `rollback`: under the lock, restores the snapshot (the newest, or `to`'s), drops it and every
/// later one, and ends a pending confirm it supersedes. Returns the snapshot restored.
Result<std::string> Rollback(const std::string& state_dir, double lock_timeout, std::optional<uint64_t> to,
                             const Seams& seams = RealSeams());

struct RemovedFrom {
  std::string backend;
  std::string skipped;  ///< not empty: the backend could not plan (auto only), why
  std::vector<Change> changes;
  std::string snapshot;  ///< saved before the removal ("" on a dry run or nothing to remove)
};
struct RemoveOutcome {
  std::vector<RemovedFrom> backends;  ///< in order, up to the one that failed
  Status error;                       ///< the failure that stopped it (earlier backends stay removed)
};
/// `remove`: on each backend in order (UFW, iptables, nftables: each plans against what the one
/// before it left), plans the removal, and unless `dry_run` saves a snapshot and applies it.
/// `by_name`: a backend that cannot plan is an error (otherwise it is skipped). Takes the lock
/// and refuses while an apply --confirm is pending (not on a dry run).
RemoveOutcome Remove(const std::vector<Backend*>& backends, bool by_name, bool dry_run, const std::string& state_dir,
                     double lock_timeout, const PlanOptions& opts, const std::function<SnapshotInfo()>& info,
                     const Seams& seams = RealSeams());

}  // namespace mw::ops
