// ops/: the apply, confirm, rollback and remove transactions over FakeEnv and FakeBackend.
#include <gtest/gtest.h>

#include "fakes/fake_backend.h"
#include "fakes/fake_env.h"
#include "ops/transaction.h"
#include "ops/watchdog.h"
#include "state/pending.h"

namespace mw {
namespace {

using testing::AddRule;
using testing::FakeBackend;
using testing::FakeEnv;

const std::string kDir = "/var/lib/mailward";

class Ops : public ::testing::Test {
 protected:
  void SetUp() override {
    env.Put("/proc/sys/kernel/random/boot_id", "boot-1\n");
    seams.env = &env;
    seams.arm_confirm = [this](const std::string& dir, const std::string& snapshot, int seconds) -> Status {
      ++armed;
      if (!arm_error.ok()) return arm_error;
      state::PendingConfirm p;
      p.snapshot = snapshot;
      p.pid = 4242;
      p.boot_id = "boot-1";
      state::SetDeadline(&p, seconds, env);
      // The watchdog holds its liveness lock.
      env.Put(state::WatchdogLockPath(dir, p.pid), "");
      env.held_by_others.insert(state::WatchdogLockPath(dir, p.pid));
      return state::WritePending(dir, p, env);
    };
    seams.backend_for_snapshot = [this](const std::string&, const std::string&) {
      return std::unique_ptr<Backend>(new Proxy(&be));
    };
    req.state_dir = kDir;
    req.lock_timeout = 0;
  }
  /// Hands the test's FakeBackend out as a fresh unique_ptr (BackendForSnapshot's shape).
  struct Proxy : Backend {
    explicit Proxy(FakeBackend* b) : b(b) {}
    FakeBackend* b;
    std::string name() const override { return b->name(); }
    Result<std::unique_ptr<BackendPlan>> Plan(const Ruleset& d, const PlanOptions& o) override { return b->Plan(d, o); }
    Status Apply(const BackendPlan& p) override { return b->Apply(p); }
    Result<Snapshot> TakeSnapshot(const BackendPlan& p) override { return b->TakeSnapshot(p); }
    Status Restore(const std::string& x, const std::string& a) override { return b->Restore(x, a); }
    Result<std::unique_ptr<BackendPlan>> PlanRemove(const PlanOptions& o) override { return b->PlanRemove(o); }
    Result<std::vector<Change>> PlanRestore(const std::string& x, const std::string& a, const PlanOptions& o) override {
      return b->PlanRestore(x, a, o);
    }
  };
  std::vector<std::string> Snaps() {
    auto l = ListSnapshots(kDir, env);
    std::vector<std::string> out;
    if (l.ok())
      for (const auto& s : *l) out.push_back(s.path);
    return out;
  }
  void SaveSnap(const std::string& bytes) {
    auto s = SaveSnapshot(kDir, Snapshot{bytes, ""}, 1, {}, env);
    ASSERT_TRUE(s.ok()) << s.status().message();
    MarkCommitted(*s, env);
  }
  /// Writes a pending confirm of the first snapshot that no watchdog holds (pid 99 holds no
  /// watchdog-99.lock), made in boot `boot_id`: stale.
  state::PendingConfirm WriteStalePending(const std::string& boot_id) {
    state::PendingConfirm p;
    p.snapshot = Snaps().at(0);
    p.pid = 99;
    p.boot_id = boot_id;
    EXPECT_TRUE(state::WritePending(kDir, p, env).ok());
    return p;
  }

  FakeEnv env;
  FakeBackend be;
  ops::Seams seams;
  ops::ApplyRequest req;
  Ruleset desired;
  int armed = 0;
  Status arm_error;
};

TEST_F(Ops, ApplyInSyncDoesNothing) {
  auto out = ops::Apply(be, desired, req, seams);
  ASSERT_TRUE(out.ok()) << out.status().message();
  EXPECT_TRUE(out->plan->in_sync());
  EXPECT_EQ(be.snapshots, 0);
  EXPECT_EQ(be.applies, 1);  // an empty plan applies nothing (the backend's no-op)
  EXPECT_EQ(be.plans_made, 1);  // no read-back
  EXPECT_TRUE(Snaps().empty());
  EXPECT_FALSE(out->armed);
  EXPECT_TRUE(out->lock.has_value());
  EXPECT_TRUE(env.held.count(kDir + "/lock"));
}

TEST_F(Ops, ApplySavesASnapshotThenCommitsIt) {
  be.plans = {{AddRule()}, {}};
  auto out = ops::Apply(be, desired, req, seams);
  ASSERT_TRUE(out.ok()) << out.status().message();
  EXPECT_EQ(be.snapshots, 1);
  EXPECT_EQ(be.applies, 1);
  EXPECT_EQ(be.plans_made, 2);  // the plan and the read-back
  auto snaps = Snaps();
  ASSERT_EQ(snaps.size(), 1u);
  EXPECT_EQ(env.Get(snaps[0]), "FAKE1\n");
  EXPECT_FALSE(env.Has(snaps[0].substr(0, snaps[0].size() - 5) + ".uncommitted"));  // committed
  out->lock.reset();
  EXPECT_FALSE(env.held.count(kDir + "/lock"));
}

TEST_F(Ops, GenerationMovedReplansThenSucceeds) {
  be.plans = {{AddRule()}, {AddRule()}, {}};
  be.moved_times = 1;
  auto out = ops::Apply(be, desired, req, seams);
  ASSERT_TRUE(out.ok()) << out.status().message();
  EXPECT_EQ(be.applies, 2);
  EXPECT_EQ(Snaps().size(), 1u);  // the first attempt's snapshot is gone
}

TEST_F(Ops, GenerationMovedGivesUpAfterMaxAttemptsLeavingNothing) {
  be.plans = {{AddRule()}};
  be.moved_times = 100;
  req.confirm_seconds = 30;
  auto out = ops::Apply(be, desired, req, seams);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), Code::kGenerationMoved);
  EXPECT_EQ(be.applies, ops::kMaxApplyAttempts);
  EXPECT_EQ(be.plans_made, ops::kMaxApplyAttempts);
  EXPECT_EQ(armed, ops::kMaxApplyAttempts);
  EXPECT_TRUE(Snaps().empty());
  EXPECT_FALSE(state::PendingRecordExists(kDir, env));  // every arming disarmed
  EXPECT_NE(env.Get(kDir + "/confirm.log").find("disarmed, nothing to revert: the apply failed"), std::string::npos);
  EXPECT_FALSE(env.held.count(kDir + "/lock"));
}

TEST_F(Ops, OtherApplyFailureKeepsNothing) {
  be.plans = {{AddRule()}};
  be.apply_error = Status::Error(Code::kFirewall, "iptables-restore failed");
  auto out = ops::Apply(be, desired, req, seams);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), Code::kFirewall);
  EXPECT_EQ(be.applies, 1);
  EXPECT_TRUE(Snaps().empty());
}

TEST_F(Ops, VerifyMismatchRestoresItsOwnCommit) {
  be.plans = {{AddRule()}, {AddRule("still")}};
  req.confirm_seconds = 30;
  auto out = ops::Apply(be, desired, req, seams);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), Code::kVerifyFailed);  // exit code 3
  EXPECT_NE(out.status().message().find("rolled back to the previous state"), std::string::npos);
  EXPECT_EQ(be.own_restores, 1);
  ASSERT_EQ(be.restored.size(), 1u);
  EXPECT_EQ(be.restored[0], "FAKE1\n");
  EXPECT_TRUE(Snaps().empty());                         // no no-op rollback point
  EXPECT_FALSE(state::PendingRecordExists(kDir, env));  // no revert pending
}

TEST_F(Ops, VerifyMismatchWhenTheRestoreFailsSaysSo) {
  be.plans = {{AddRule()}, {AddRule("still")}};
  be.restore_error = Status::Error(Code::kFirewall, "no");
  auto out = ops::Apply(be, desired, req, seams);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), Code::kVerifyFailed);
  EXPECT_NE(out.status().message().find("ROLLBACK FAILED: no"), std::string::npos) << out.status().message();
  EXPECT_EQ(Snaps().size(), 1u);  // kept: it is the way back
  be.restore_error = Status::Error(Code::kGenerationMoved, "another process committed");
  be.plans = {{AddRule()}, {AddRule("still")}};
  out = ops::Apply(be, desired, req, seams);
  EXPECT_NE(out.status().message().find("; another process committed"), std::string::npos) << out.status().message();
}

TEST_F(Ops, ConfirmArmsBeforeTheCommitAndCommitMovesTheDeadline) {
  be.plans = {{AddRule()}, {}};
  req.confirm_seconds = 30;
  auto out = ops::Apply(be, desired, req, seams);
  ASSERT_TRUE(out.ok()) << out.status().message();
  EXPECT_TRUE(out->armed);
  state::PendingConfirm p;
  ASSERT_TRUE(state::ReadPending(kDir, &p, env));
  EXPECT_TRUE(p.committed);
  EXPECT_EQ(p.snapshot, Snaps().at(0));
  // Auto-confirm: refused when a check failed, done when they passed.
  auto no = ops::MaybeAutoConfirm(kDir, true, false, true, seams);
  EXPECT_FALSE(no.confirmed);
  EXPECT_EQ(no.why, "a probe of an open port failed");
  no = ops::MaybeAutoConfirm(kDir, true, true, false, seams);
  EXPECT_EQ(no.why, "the policy closes the port of an SSH session to its client");
  env.now_ms += 31000;
  no = ops::MaybeAutoConfirm(kDir, true, true, true, seams);
  EXPECT_EQ(no.why, "the checks outlasted the --confirm time");
  env.now_ms -= 31000;
  EXPECT_FALSE(ops::MaybeAutoConfirm(kDir, false, true, true, seams).confirmed);
  EXPECT_TRUE(state::PendingRecordExists(kDir, env));
  EXPECT_TRUE(ops::MaybeAutoConfirm(kDir, true, true, true, seams).confirmed);
  EXPECT_FALSE(state::PendingRecordExists(kDir, env));
}

TEST_F(Ops, ArmingFailureAppliesNothing) {
  be.plans = {{AddRule()}};
  req.confirm_seconds = 30;
  arm_error = Status::Io("cannot start the confirm watchdog");
  auto out = ops::Apply(be, desired, req, seams);
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("nothing was applied"), std::string::npos);
  EXPECT_EQ(be.applies, 0);
  EXPECT_TRUE(Snaps().empty());
}

TEST_F(Ops, LockBusyIsBusy) {
  env.held_by_others.insert(kDir + "/lock");
  auto out = ops::Apply(be, desired, req, seams);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), Code::kBusy);
  EXPECT_EQ(be.plans_made, 0);
  EXPECT_EQ(ops::Confirm(kDir, 0, seams).code(), Code::kBusy);
  EXPECT_EQ(ops::Rollback(kDir, 0, std::nullopt, seams).status().code(), Code::kBusy);
}

TEST_F(Ops, APendingConfirmRefusesApplyAndRemove) {
  be.plans = {{AddRule()}, {}};
  req.confirm_seconds = 30;
  ASSERT_TRUE(ops::Apply(be, desired, req, seams).ok());
  be.plans = {{AddRule()}, {}};
  auto again = ops::Apply(be, desired, req, seams);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), Code::kRefused);
  EXPECT_NE(again.status().message().find("still pending"), std::string::npos);
  auto removed = ops::Remove({&be}, true, false, kDir, 0, {}, [] { return SnapshotInfo{}; }, seams);
  EXPECT_EQ(removed.error.code(), Code::kRefused);
  // Confirm ends it; then nothing is pending.
  EXPECT_TRUE(ops::Confirm(kDir, 0, seams).ok());
  EXPECT_EQ(ops::Confirm(kDir, 0, seams).code(), Code::kRefused);
}

TEST_F(Ops, AStalePendingConfirmIsRevertedFirst) {
  SaveSnap("OLD\n");
  state::PendingConfirm p = WriteStalePending("boot-1");
  auto out = ops::Apply(be, desired, req, seams);
  ASSERT_TRUE(out.ok()) << out.status().message();
  ASSERT_EQ(out->notes.size(), 1u);
  EXPECT_NE(out->notes[0].find("was never confirmed"), std::string::npos);
  ASSERT_EQ(be.restored.size(), 1u);
  EXPECT_EQ(be.restored[0], "OLD\n");
  EXPECT_FALSE(state::PendingRecordExists(kDir, env));
  out->lock.reset();
  // Confirm of a stale one reverts it and refuses.
  ASSERT_TRUE(state::WritePending(kDir, p, env).ok());
  env.Put(p.snapshot, "OLD\n");
  Status c = ops::Confirm(kDir, 0, seams);
  EXPECT_EQ(c.code(), Code::kRefused);
  EXPECT_NE(c.message().find("reverted to"), std::string::npos) << c.message();
}

TEST_F(Ops, AStalePendingConfirmWhoseRevertFailsIsStillEnded) {
  SaveSnap("OLD\n");
  WriteStalePending("boot-0");  // another boot
  be.restore_error = Status::Error(Code::kFirewall, "restore broke");
  auto out = ops::Apply(be, desired, req, seams);
  ASSERT_TRUE(out.ok()) << out.status().message();
  EXPECT_NE(out->notes.at(0).find("its revert failed (restore broke); applying the policy anyway"), std::string::npos)
      << out->notes.at(0);
  EXPECT_NE(env.Get(kDir + "/confirm.log").find("rebooted (boot id boot-0)): REVERT FAILED: restore broke"),
            std::string::npos);
  EXPECT_FALSE(state::PendingRecordExists(kDir, env));
  EXPECT_EQ(Snaps().size(), 1u);  // kept: it is still the way back
}

TEST_F(Ops, ADamagedRecordWithoutWatchdogIsRemoved) {
  env.Put(kDir + "/pending-confirm", "garbage");
  auto out = ops::Apply(be, desired, req, seams);
  ASSERT_TRUE(out.ok()) << out.status().message();
  EXPECT_NE(out->notes.at(0).find("removed a damaged"), std::string::npos);
  out->lock.reset();
  // With a watchdog alive it is refused.
  env.Put(kDir + "/pending-confirm", "garbage");
  env.Put(state::WatchdogLockPath(kDir, 7), "");
  env.held_by_others.insert(state::WatchdogLockPath(kDir, 7));
  EXPECT_EQ(ops::Apply(be, desired, req, seams).status().code(), Code::kRefused);
}

TEST_F(Ops, RemoveEndsAStaleOrDamagedPendingConfirmSoNothingBringsTheRulesBack) {
  // Left in place, a later 'confirm' or 'apply' would revert the stale record and put back
  // the rules 'remove' took away.
  SaveSnap("OLD\n");
  state::PendingConfirm p = WriteStalePending("boot-1");
  auto out = ops::Remove({&be}, true, false, kDir, 0, {}, [] { return SnapshotInfo{}; }, seams);
  ASSERT_TRUE(out.error.ok()) << out.error.message();
  EXPECT_FALSE(state::PendingRecordExists(kDir, env));
  EXPECT_TRUE(be.restored.empty());  // nothing reverted
  EXPECT_NE(env.Get(kDir + "/confirm.log").find("ended by 'mailward remove'"), std::string::npos);
  // A damaged record: refused while a watchdog may still act on it, else removed.
  env.Put(kDir + "/pending-confirm", "garbage");
  env.Put(state::WatchdogLockPath(kDir, 7), "");
  env.held_by_others.insert(state::WatchdogLockPath(kDir, 7));
  out = ops::Remove({&be}, true, false, kDir, 0, {}, [] { return SnapshotInfo{}; }, seams);
  EXPECT_EQ(out.error.code(), Code::kRefused);
  env.held_by_others.clear();
  out = ops::Remove({&be}, true, false, kDir, 0, {}, [] { return SnapshotInfo{}; }, seams);
  ASSERT_TRUE(out.error.ok()) << out.error.message();
  EXPECT_FALSE(state::PendingRecordExists(kDir, env));
}

TEST_F(Ops, WatchdogRevertsAtTheDeadline) {
  SaveSnap("OLD\n");
  state::PendingConfirm p;
  p.snapshot = Snaps().at(0);
  p.pid = 4242;
  state::SetDeadline(&p, 30, env);
  ASSERT_TRUE(state::WritePending(kDir, p, env).ok());
  const int64_t start = env.now_ms;
  EXPECT_EQ(ops::WatchdogLoop(kDir, 4242, p, env, seams.backend_for_snapshot), 0);
  EXPECT_GE(env.now_ms - start, 30000);
  ASSERT_EQ(be.restored.size(), 1u);
  EXPECT_EQ(be.restored[0], "OLD\n");
  EXPECT_FALSE(state::PendingRecordExists(kDir, env));
  EXPECT_TRUE(Snaps().empty());  // no rollback point any more
  EXPECT_NE(env.Get(kDir + "/confirm.log").find("not confirmed in time: reverted to " + p.snapshot), std::string::npos);
  EXPECT_FALSE(env.held.count(kDir + "/lock"));
}

TEST_F(Ops, WatchdogKeepsTheLastReadingOfADamagedRecordAndReportsAFailedRevert) {
  SaveSnap("OLD\n");
  state::PendingConfirm p;
  p.snapshot = Snaps().at(0);
  p.pid = 4242;
  state::SetDeadline(&p, 5, env);
  env.Put(kDir + "/pending-confirm", "half-written");
  be.restore_error = Status::Error(Code::kFirewall, "nope");
  EXPECT_EQ(ops::WatchdogLoop(kDir, 4242, p, env, seams.backend_for_snapshot), 1);
  EXPECT_EQ(be.restores, 1);
  EXPECT_NE(env.Get(kDir + "/confirm.log").find("not confirmed in time: REVERT FAILED: nope"), std::string::npos);
  EXPECT_EQ(Snaps().size(), 1u);
}

TEST_F(Ops, WatchdogLeavesWhenConfirmedDisarmedOrSuperseded) {
  state::PendingConfirm p;
  p.snapshot = kDir + "/snapshots/00000000000000000001.snap";
  p.pid = 4242;
  state::SetDeadline(&p, 30, env);
  EXPECT_EQ(ops::WatchdogLoop(kDir, 4242, p, env, seams.backend_for_snapshot), 0);  // no record: confirmed
  p.pid = 5555;  // another watchdog's record
  ASSERT_TRUE(state::WritePending(kDir, p, env).ok());
  EXPECT_EQ(ops::WatchdogLoop(kDir, 4242, p, env, seams.backend_for_snapshot), 0);
  EXPECT_EQ(be.restores, 0);
  // Confirmed while it waits.
  struct ConfirmingEnv : FakeEnv {
    int64_t confirm_at = 0;
    void SleepMs(int64_t ms) override {
      FakeEnv::SleepMs(ms);
      if (now_ms >= confirm_at) files.erase(kDir + "/pending-confirm");
    }
  } cenv;
  cenv.confirm_at = cenv.now_ms + 10000;
  p.pid = 4242;
  state::SetDeadline(&p, 30, cenv);
  ASSERT_TRUE(state::WritePending(kDir, p, cenv).ok());
  EXPECT_EQ(ops::WatchdogLoop(kDir, 4242, p, cenv, seams.backend_for_snapshot), 0);
  EXPECT_EQ(be.restores, 0);
  EXPECT_LT(cenv.now_ms, cenv.confirm_at + 1000);
}

TEST_F(Ops, RollbackPicksTheNewestOrTo) {
  EXPECT_EQ(ops::Rollback(kDir, 0, std::nullopt, seams).status().code(), Code::kNotFound);
  SaveSnap("ONE\n");
  SaveSnap("TWO\n");
  SaveSnap("THREE\n");
  auto missing = ops::Rollback(kDir, 0, 9, seams);
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_NE(missing.status().message().find("there are: 1, 2, 3"), std::string::npos);
  auto r = ops::Rollback(kDir, 0, std::nullopt, seams);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(be.restored.back(), "THREE\n");
  EXPECT_EQ(Snaps().size(), 2u);
  r = ops::Rollback(kDir, 0, 1, seams);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(be.restored.back(), "ONE\n");
  EXPECT_TRUE(Snaps().empty());  // it and every later one
}

TEST_F(Ops, RollbackEndsAPendingConfirm) {
  SaveSnap("ONE\n");
  state::PendingConfirm p;
  p.snapshot = Snaps().at(0);
  p.pid = 4242;
  ASSERT_TRUE(state::WritePending(kDir, p, env).ok());
  ASSERT_TRUE(ops::Rollback(kDir, 0, std::nullopt, seams).ok());
  EXPECT_FALSE(state::PendingRecordExists(kDir, env));
  EXPECT_NE(env.Get(kDir + "/confirm.log").find("ended by 'mailward rollback': rolled back to"), std::string::npos);
  // One whose snapshot is gone: nothing to revert.
  p.snapshot = kDir + "/snapshots/00000000000000000009.snap";
  ASSERT_TRUE(state::WritePending(kDir, p, env).ok());
  EXPECT_EQ(ops::Rollback(kDir, 0, std::nullopt, seams).status().code(), Code::kNotFound);
  EXPECT_NE(env.Get(kDir + "/confirm.log").find("its apply never committed"), std::string::npos);
}

TEST_F(Ops, RollbackPreviewChangesNothing) {
  SaveSnap("ONE\n");
  SaveSnap("TWO\n");
  auto pv = ops::PreviewRollback(kDir, 1, {}, seams);
  ASSERT_TRUE(pv.ok()) << pv.status().message();
  EXPECT_EQ(pv->snapshot.seq, 1u);
  EXPECT_EQ(pv->backend, "fake");
  EXPECT_EQ(pv->dropped, 1u);
  ASSERT_EQ(pv->changes.size(), 1u);
  EXPECT_EQ(be.restores, 0);
  EXPECT_EQ(Snaps().size(), 2u);
  EXPECT_FALSE(env.held.count(kDir + "/lock"));
  EXPECT_EQ(ops::PreviewRollback(kDir, 5, {}, seams).status().code(), Code::kNotFound);
}

TEST_F(Ops, RemoveDryRunChangesNothing) {
  be.remove_changes = {Change{ChangeOp::kDelete, ChangeObject::kTable, "mailward", "", 1, {}}};
  auto out = ops::Remove({&be}, false, true, kDir, 0, {}, [] { return SnapshotInfo{}; }, seams);
  ASSERT_TRUE(out.error.ok());
  ASSERT_EQ(out.backends.size(), 1u);
  EXPECT_EQ(out.backends[0].changes.size(), 1u);
  EXPECT_EQ(be.applies, 0);
  EXPECT_EQ(be.snapshots, 0);
  EXPECT_TRUE(Snaps().empty());
  EXPECT_FALSE(env.dirs.count(kDir));  // not even the state directory
}

TEST_F(Ops, RemoveInOrderSkippingUnusableBackends) {
  FakeBackend broken;
  broken.remove_plan_error = Status::Error(Code::kFirewall, "ufw is not installed");
  be.remove_changes = {Change{ChangeOp::kDelete, ChangeObject::kTable, "mailward", "", 1, {}}};
  auto out = ops::Remove({&broken, &be}, false, false, kDir, 0, {},
                         [] { return SnapshotInfo{"remove", "root", "", ""}; }, seams);
  ASSERT_TRUE(out.error.ok()) << out.error.message();
  ASSERT_EQ(out.backends.size(), 2u);
  EXPECT_EQ(out.backends[0].skipped, "ufw is not installed");
  EXPECT_EQ(be.applies, 1);
  EXPECT_EQ(out.backends[1].snapshot, Snaps().at(0));
  // Asked for by name, an unusable backend is an error.
  out = ops::Remove({&broken}, true, false, kDir, 0, {}, [] { return SnapshotInfo{}; }, seams);
  EXPECT_EQ(out.error.code(), Code::kFirewall);
  // A failed apply keeps no snapshot.
  be.apply_error = Status::Error(Code::kFirewall, "boom");
  out = ops::Remove({&be}, true, false, kDir, 0, {}, [] { return SnapshotInfo{}; }, seams);
  EXPECT_NE(out.error.message().find("fake: nothing of it was removed"), std::string::npos) << out.error.message();
  EXPECT_EQ(Snaps().size(), 1u);
}

}  // namespace
}  // namespace mw

namespace mw {
namespace {

struct OtherPlan : BackendPlan {};

TEST(PlanAs, ReturnsTheBackendsOwnPlanAndAbortsOnAForeignOne) {
  OtherPlan mine;
  mine.generation = 3;
  EXPECT_EQ(PlanAs<OtherPlan>(mine, "test").generation, 3u);
  BackendPlan foreign;
  EXPECT_DEATH((void)PlanAs<OtherPlan>(foreign, "test"), "the test backend was given a plan it did not make");
}

}  // namespace
}  // namespace mw
