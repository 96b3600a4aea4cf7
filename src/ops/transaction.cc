#include "ops/transaction.h"

#include "ops/watchdog.h"
#include "state/pending.h"
#include "sys/test_hooks.h"
#include "report/report.h"
#include "util/text.h"
#include "util/timing.h"

namespace mw::ops {

Seams RealSeams() {
  Seams s;
  s.arm_confirm = ArmConfirm;
  s.backend_for_snapshot = [](const std::string& bytes, const std::string& state_dir) {
    return BackendForSnapshot(bytes, BackendConfig{state_dir});
  };
  return s;
}

namespace {

/// Resolves a stale pending confirm as not confirmed: restores its snapshot (the last confirmed
/// state), removes the record and logs it. REQUIRES: the lock.
Status RevertStale(const std::string& state_dir, const state::PendingConfirm& p, const std::string& why,
                   const Seams& seams) {
  return RevertPending(state_dir, p, "stale pending confirmation (" + why + ")", *seams.env, seams.backend_for_snapshot);
}

}  // namespace

Result<ApplyOutcome> Apply(Backend& be, const Ruleset& desired, const ApplyRequest& req, const Seams& seams) {
  sys::Env& env = *seams.env;
  const std::string& dir = req.state_dir;
  ApplyOutcome out;
  auto lock = state::StateLock::Acquire(dir, req.lock_timeout, env);
  if (!lock.ok()) return lock.status();
  out.lock.emplace(std::move(lock.value()));
  state::PendingConfirm pending;
  if (state::ReadPending(dir, &pending, env)) {
    std::string why;
    if (!state::PendingIsStale(dir, pending, &why, env))
      return Status::Error(Code::kRefused, "an earlier apply --confirm is still pending (it reverts to " + pending.snapshot +
                                               " at its deadline): run 'mailward confirm' or 'mailward rollback' first; "
                                               "nothing was applied");
    // Nobody will ever confirm or revert it (a reboot, a killed watchdog): not confirmed.
    Status rs = RevertStale(dir, pending, why, seams);
    out.notes.push_back("an earlier apply --confirm was never confirmed (" + why + "): " +
                        (rs.ok() ? "reverted to " + pending.snapshot + " first"
                                 : "its revert failed (" + rs.message() + "); applying the policy anyway") +
                        ", see " + dir + "/confirm.log");
  } else if (state::PendingRecordExists(dir, env)) {
    // A record that cannot be read: its watchdog still reverts by its last reading of it.
    if (state::AnyWatchdogAlive(dir, env))
      return Status::Error(Code::kRefused, dir + "/pending-confirm cannot be read, and an apply --confirm watchdog "
                                                 "still runs: run 'mailward confirm' (keep the applied policy) or 'mailward "
                                                 "rollback' first; nothing was applied");
    state::EndPending(dir, "damaged pending confirmation record with no watchdog left: removed, nothing reverted", env);
    out.notes.push_back("removed a damaged " + dir + "/pending-confirm that no watchdog was waiting on");
  }
  ResolveUncommitted(dir, env);
  if (sys::InjectedFault("state-dir"))  // integration tests only (tests/hooks); never in production
    return Status::Io("injected fault: the state directory is unwritable; nothing was applied");

  std::unique_ptr<BackendPlan> plan;
  Snapshot snapshot;
  std::string snapshot_path;
  const bool confirming = req.confirm_seconds > 0;
  bool armed = false;
  for (int attempt = 1;; ++attempt) {
    auto p = [&] {
      Phase phase("plan");
      return be.Plan(desired, req.plan_options);
    }();
    if (!p.ok()) return p.status();
    plan = std::move(p.value());
    if (!plan->in_sync()) {
      Phase phase("snapshot");
      auto snap = be.TakeSnapshot(*plan);
      if (!snap.ok()) return snap.status();
      snapshot = std::move(snap.value());
      Phase save("save snapshot");
      auto saved = SaveSnapshot(dir, snapshot, plan->generation, req.info, env);
      if (!saved.ok()) return saved.status().WithContext("cannot save the rollback snapshot, nothing was applied");
      snapshot_path = *saved;
      if (confirming) {
        // Armed before the commit: from here on, whatever happens to this process, the watchdog
        // reverts at the deadline unless the apply is confirmed (or disarms it itself).
        Status ws = seams.arm_confirm(dir, snapshot_path, req.confirm_seconds);
        if (!ws.ok()) {
          RemoveSnapshot(snapshot_path, env);
          return ws.WithContext("nothing was applied");
        }
        armed = true;
      }
    }
    sys::TestPausePoint("before-commit");
    Status s = [&] {
      Phase phase("apply batch");
      return be.Apply(*plan);
    }();
    if (s.ok()) break;
    // Nothing was applied: this attempt's snapshot is not a rollback point, nor a revert.
    if (armed) state::DisarmConfirm(dir, "the apply failed and changed nothing (" + s.message() + ")", env);
    armed = false;
    if (!snapshot_path.empty()) {
      RemoveSnapshot(snapshot_path, env);
      snapshot_path.clear();
    }
    if (s.code() == Code::kGenerationMoved && attempt < kMaxApplyAttempts) continue;  // someone else committed: re-plan
    return s;
  }
  // Committed: the confirm deadline counts from now.
  Status committed = armed ? state::CommitPending(dir, req.confirm_seconds, env) : Status::Ok();
  if (!snapshot_path.empty()) MarkCommitted(snapshot_path, env);
  sys::TestPausePoint("after-commit");
  if (!committed.ok()) {
    Status rs = be.Restore(snapshot.bytes, ReadAttachment(snapshot_path, env));
    if (rs.ok()) {
      state::DisarmConfirm(dir, "the apply could not record its commit and put the old state back", env);
      RemoveSnapshot(snapshot_path, env);
    }
    return committed.WithContext(rs.ok() ? "cannot record the pending confirmation; reverted"
                                         : "cannot record the pending confirmation; REVERT FAILED (" + rs.message() +
                                               "), the watchdog retries at the deadline");
  }

  // Verify: read back and compare with the policy.
  if (!plan->in_sync()) {
    PlanOptions o = req.plan_options;
    o.analyze_conflicts = false;
    o.verify_read_back = true;
    std::string verify_error;
    {
      Phase phase("verify read-back");
      auto after = be.Plan(desired, o);
      if (!after.ok()) {
        verify_error = after.status().message();
      } else if (!(*after)->in_sync()) {
        verify_error = "the ruleset read back differs from the policy (" + std::to_string((*after)->changes.size()) +
                       " differences):\n" + PlanText((*after)->changes, false, false);
      }
    }
    if (!verify_error.empty()) {
      // Only this apply's own commit is undone (the backend checks nobody committed since).
      Status rs = be.RestoreOwnCommit(*plan, snapshot.bytes, ReadAttachment(snapshot_path, env));
      if (rs.ok()) {
        // Back where it started: no revert pending, and no no-op rollback point.
        if (armed) state::DisarmConfirm(dir, "verification failed and the apply rolled back itself", env);
        RemoveSnapshot(snapshot_path, env);
      } else if (armed && rs.code() == Code::kGenerationMoved) {
        // Another process committed after this apply: its state is not ours to revert.
        state::DisarmConfirm(dir, "verification failed and another process committed after this apply; its state is left alone", env);
      }
      return Status::Error(Code::kVerifyFailed,
                           "verification failed: " + verify_error +
                               (rs.ok() ? "; rolled back to the previous state"
                                : rs.code() == Code::kGenerationMoved
                                    ? "; " + rs.message()
                                    : "; ROLLBACK FAILED: " + rs.message() +
                                          (armed ? " (the confirm watchdog tries again at its deadline)" : "")));
    }
  }
  out.plan = std::move(plan);
  out.armed = armed;
  return out;
}

AutoConfirm MaybeAutoConfirm(const std::string& state_dir, bool auto_confirm, bool probes_ok, bool lockout_ok,
                             const Seams& seams) {
  sys::Env& env = *seams.env;
  AutoConfirm a;
  if (!probes_ok) a.why = "a probe of an open port failed";
  else if (!lockout_ok) a.why = "the policy closes the port of an SSH session to its client";
  state::PendingConfirm now_pending;
  if (a.why.empty() && state::ReadPending(state_dir, &now_pending, env) && env.BootMs() >= now_pending.deadline_ms)
    a.why = "the checks outlasted the --confirm time";  // the watchdog reverts once this apply ends
  a.confirmed = auto_confirm && a.why.empty();
  if (a.confirmed)
    state::ConfirmPending(state_dir, "auto-confirmed: read-back verified, open ports answer, no SSH session is closed off", env);
  return a;
}

Status Confirm(const std::string& state_dir, double lock_timeout, const Seams& seams) {
  sys::Env& env = *seams.env;
  auto lock = state::StateLock::Acquire(state_dir, lock_timeout, env);
  if (!lock.ok()) return lock.status();
  state::PendingConfirm pending;
  std::string why;
  if (state::ReadPending(state_dir, &pending, env) && state::PendingIsStale(state_dir, pending, &why, env)) {
    Status rs = RevertStale(state_dir, pending, why, seams);
    return Status::Error(Code::kRefused, "nothing to confirm: the pending apply --confirm can no longer be kept (" + why +
                                             "), so it counts as not confirmed: " +
                                             (rs.ok() ? "reverted to " + pending.snapshot : "its revert FAILED: " + rs.message()) +
                                             " (see " + state_dir + "/confirm.log); apply again to keep the policy");
  }
  if (!state::ConfirmPending(state_dir, "confirmed", env))
    return Status::Error(Code::kRefused, "nothing to confirm (no apply --confirm is pending; it may have been reverted "
                                         "already, see " + state_dir + "/confirm.log)");
  return Status::Ok();
}

Result<SnapshotFile> PickSnapshot(const std::string& state_dir, std::optional<uint64_t> to,
                                  const std::vector<SnapshotFile>& snaps) {
  if (snaps.empty())
    return Status::Error(Code::kNotFound, "no snapshot to roll back to: " + state_dir +
                                              "/snapshots holds none (no apply through this state directory changed the "
                                              "firewall, or every earlier state was rolled back already); nothing was changed");
  if (!to) return snaps.back();
  std::string have;
  for (const auto& sf : snaps) {
    if (sf.seq == *to) return sf;
    have += (have.empty() ? "" : ", ") + std::to_string(sf.seq);
  }
  return Status::Error(Code::kNotFound, "no snapshot " + std::to_string(*to) + " in " + state_dir +
                                            "/snapshots (there are: " + have +
                                            "; 'mailward snapshots' lists them); nothing was changed");
}

Result<RollbackPreview> PreviewRollback(const std::string& state_dir, std::optional<uint64_t> to, const PlanOptions& opts,
                                        const Seams& seams) {
  sys::Env& env = *seams.env;
  auto snaps = ListSnapshots(state_dir, env);
  if (!snaps.ok()) return snaps.status();
  auto pick = PickSnapshot(state_dir, to, *snaps);
  if (!pick.ok()) return pick.status();
  auto data = env.ReadFile(pick->path, Follow::kNoSymlinks);
  if (!data.ok()) return data.status();
  auto be = seams.backend_for_snapshot(*data, state_dir);
  auto changes = be->PlanRestore(*data, ReadAttachment(pick->path, env), opts);
  if (!changes.ok()) return changes.status();
  RollbackPreview out{*pick, be->name(), std::move(changes.value()), 0};
  for (const auto& sf : *snaps)
    if (sf.seq > pick->seq) ++out.dropped;
  return out;
}

Result<std::string> Rollback(const std::string& state_dir, double lock_timeout, std::optional<uint64_t> to,
                             const Seams& seams) {
  sys::Env& env = *seams.env;
  auto lock = state::StateLock::Acquire(state_dir, lock_timeout, env);
  if (!lock.ok()) return lock.status();
  // A pending revert (live or stale) is superseded by this rollback: its snapshot is the newest.
  state::PendingConfirm pending;
  bool has_pending = state::ReadPending(state_dir, &pending, env);
  const bool damaged_pending = !has_pending && state::PendingRecordExists(state_dir, env);
  ResolveUncommitted(state_dir, env);
  if (has_pending && !env.Exists(pending.snapshot)) {
    // Its apply was killed before committing (or its snapshot is gone): nothing to revert.
    state::EndPending(state_dir, "pending confirmation ended by 'mailward rollback': its apply never committed, nothing to revert", env);
    has_pending = false;
  }
  auto snaps = ListSnapshots(state_dir, env);
  if (!snaps.ok()) return snaps.status();
  auto picked = PickSnapshot(state_dir, to, *snaps);
  if (!picked.ok()) return picked.status();
  size_t pick = 0;
  while ((*snaps)[pick].seq != picked->seq) ++pick;
  const std::string newest = (*snaps)[pick].path;
  auto data = env.ReadFile(newest, Follow::kNoSymlinks);
  if (!data.ok()) return data.status();
  auto be = seams.backend_for_snapshot(*data, state_dir);
  MW_RETURN_IF_ERROR(be->Restore(*data, ReadAttachment(newest, env)));
  for (size_t i = snaps->size(); i-- > pick;) RemoveSnapshot((*snaps)[i].path, env);
  if (has_pending || damaged_pending)
    state::EndPending(state_dir, "pending confirmation ended by 'mailward rollback': rolled back to " + newest, env);
  return newest;
}

RemoveOutcome Remove(const std::vector<Backend*>& backends, bool by_name, bool dry_run, const std::string& state_dir,
                     double lock_timeout, const PlanOptions& opts, const std::function<SnapshotInfo()>& info,
                     const Seams& seams) {
  sys::Env& env = *seams.env;
  RemoveOutcome out;
  std::optional<state::StateLock> lock;
  if (!dry_run) {
    auto l = state::StateLock::Acquire(state_dir, lock_timeout, env);
    if (!l.ok()) {
      out.error = l.status();
      return out;
    }
    lock.emplace(std::move(l.value()));
    state::PendingConfirm pending;
    std::string why;
    if (state::ReadPending(state_dir, &pending, env)) {
      if (!state::PendingIsStale(state_dir, pending, &why, env)) {
        out.error = Status::Error(Code::kRefused, "an apply --confirm is pending (it reverts to " + pending.snapshot +
                                                      " at its deadline): run 'mailward confirm' or 'mailward rollback' "
                                                      "first; nothing was removed");
        return out;
      }
      // Nobody will confirm or revert it now; left in place, a later 'confirm' or 'apply' would
      // revert it and bring back what is removed here.
      state::EndPending(state_dir, "pending confirmation ended by 'mailward remove' (" + why + "): nothing reverted", env);
    } else if (state::PendingRecordExists(state_dir, env)) {
      // Unreadable: its watchdog, if alive, still reverts by its last reading of it.
      if (state::AnyWatchdogAlive(state_dir, env)) {
        out.error = Status::Error(Code::kRefused, state_dir + "/pending-confirm cannot be read, and an apply --confirm "
                                                              "watchdog still runs: run 'mailward confirm' or 'mailward "
                                                              "rollback' first; nothing was removed");
        return out;
      }
      state::EndPending(state_dir, "damaged pending confirmation record with no watchdog left: removed by 'mailward remove'",
                        env);
    }
    ResolveUncommitted(state_dir, env);
  }
  for (Backend* be : backends) {
    auto plan = be->PlanRemove(opts);
    if (!plan.ok()) {
      // A backend whose tools are missing or unusable holds nothing of mailward's to remove,
      // unless it was asked for by name.
      if (by_name) {
        out.error = plan.status();
        return out;
      }
      out.backends.push_back({be->name(), plan.status().message(), {}, ""});
      continue;
    }
    const BackendPlan& p = **plan;
    RemovedFrom r{be->name(), "", p.changes, ""};
    if (!dry_run && !p.in_sync()) {
      auto snap = be->TakeSnapshot(p);
      if (!snap.ok()) {
        out.error = snap.status().WithContext("nothing more was removed");
        return out;
      }
      auto saved = SaveSnapshot(state_dir, *snap, p.generation, info(), env);
      if (!saved.ok()) {
        out.error = saved.status().WithContext("cannot save the rollback snapshot; nothing more was removed");
        return out;
      }
      Status s = be->Apply(p);
      if (!s.ok()) {
        RemoveSnapshot(*saved, env);
        out.error = s.WithContext(be->name() + ": nothing of it was removed");
        return out;
      }
      MarkCommitted(*saved, env);
      r.snapshot = *saved;
    }
    out.backends.push_back(std::move(r));
  }
  return out;
}

}  // namespace mw::ops
