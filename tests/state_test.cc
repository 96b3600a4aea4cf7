// state/: the lock and the pending-confirm record, through FakeEnv.
#include <gtest/gtest.h>

#include <cmath>

#include "state/lock.h"
#include "state/pending.h"
#include "fakes/fake_env.h"

namespace mw {
namespace {

using testing::FakeEnv;

const std::string kDir = "/var/lib/mailward";

TEST(StateLock, TakesTheLockAndReleasesItWithTheHandle) {
  FakeEnv env;
  {
    auto lock = state::StateLock::Acquire(kDir, 0, env);
    ASSERT_TRUE(lock.ok()) << lock.status().message();
    EXPECT_TRUE(env.dirs.count(kDir));
    EXPECT_TRUE(env.held.count(kDir + "/lock"));
    state::StateLock moved = std::move(lock.value());
    EXPECT_TRUE(env.held.count(kDir + "/lock"));
  }
  EXPECT_FALSE(env.held.count(kDir + "/lock"));
}

TEST(StateLock, BusyAfterTheTimeoutWhenAnotherHoldsIt) {
  FakeEnv env;
  env.held_by_others.insert(kDir + "/lock");
  const int64_t start = env.now_ms;
  auto lock = state::StateLock::Acquire(kDir, 2, env);
  ASSERT_FALSE(lock.ok());
  EXPECT_EQ(lock.status().code(), Code::kBusy);
  EXPECT_NE(lock.status().message().find("held for more than 2 s"), std::string::npos) << lock.status().message();
  EXPECT_GE(env.now_ms - start, 2000);
}

TEST(StateLock, RefusesABadTimeoutAnUntrustedDirAndPlantedEntries) {
  FakeEnv env;
  EXPECT_EQ(state::StateLock::Acquire(kDir, -1, env).status().code(), Code::kRefused);
  EXPECT_EQ(state::StateLock::Acquire(kDir, std::nan(""), env).status().code(), Code::kRefused);
  env.untrusted.insert(kDir);
  EXPECT_EQ(state::StateLock::Acquire(kDir, 0, env).status().code(), Code::kRefused);
  env.untrusted.clear();
  env.planted[kDir + "/confirm.log"] = sys::EntryKind::kSymlink;
  auto s = state::StateLock::Acquire(kDir, 0, env);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("confirm.log is a symlink"), std::string::npos) << s.status().message();
  EXPECT_FALSE(env.held.count(kDir + "/lock"));  // refused before locking
}

TEST(StateLock, ChecksEveryEntryKind) {
  FakeEnv env;
  EXPECT_TRUE(state::CheckStateEntries(kDir, env).ok());
  env.Put(kDir + "/snapshots", "");  // a file where the directory belongs
  EXPECT_NE(state::CheckStateEntries(kDir, env).message().find("not a directory"), std::string::npos);
  env.files.erase(kDir + "/snapshots");
  env.dirs.insert(kDir + "/snapshots");
  env.Put(kDir + "/snapshots/00000000000000000001.snap", "x");
  EXPECT_TRUE(state::CheckStateEntries(kDir, env).ok());
  env.planted[kDir + "/snapshots/00000000000000000002.snap"] = sys::EntryKind::kOther;  // a FIFO
  Status s = state::CheckStateEntries(kDir, env);
  EXPECT_EQ(s.code(), Code::kRefused);
  EXPECT_NE(s.message().find("00000000000000000002.snap is not a regular file"), std::string::npos) << s.message();
  env.planted.clear();
  env.dirs.insert(kDir + "/pending-confirm");
  EXPECT_NE(state::CheckStateEntries(kDir, env).message().find("pending-confirm is not a regular file"),
            std::string::npos);
}

TEST(StateLock, AnUnopenableLockFileSaysWhichFile) {
  struct NoOpen : FakeEnv {
    Result<std::unique_ptr<sys::FileLock>> TryLock(const std::string&, sys::LockInherit) override {
      return Status::Io("Too many levels of symbolic links");
    }
  } env;
  auto s = state::StateLock::Acquire(kDir, 0, env);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Code::kIo);
  EXPECT_EQ(s.status().message(), kDir + "/lock: cannot open the lock file: Too many levels of symbolic links");
}

class Pending : public ::testing::Test {
 protected:
  void SetUp() override {
    env.Put("/proc/sys/kernel/random/boot_id", "boot-1\n");
  }
  state::PendingConfirm Record(int pid = 42) {
    state::PendingConfirm p;
    p.snapshot = kDir + "/snapshots/00000000000000000003.snap";
    p.pid = pid;
    p.boot_id = "boot-1";
    state::SetDeadline(&p, 60, env);
    return p;
  }
  FakeEnv env;
};

TEST_F(Pending, WriteReadRoundTrip) {
  EXPECT_FALSE(state::PendingRecordExists(kDir, env));
  state::PendingConfirm p = Record();
  ASSERT_TRUE(state::WritePending(kDir, p, env).ok());
  EXPECT_TRUE(state::PendingRecordExists(kDir, env));
  state::PendingConfirm r;
  ASSERT_TRUE(state::ReadPending(kDir, &r, env));
  EXPECT_EQ(r.snapshot, p.snapshot);
  EXPECT_EQ(r.pid, 42);
  EXPECT_EQ(r.deadline_ms, env.now_ms + 60000);
  EXPECT_EQ(r.deadline, env.unix_s + 60);
  EXPECT_EQ(r.seconds, 60);
  EXPECT_FALSE(r.committed);
}

TEST_F(Pending, RecordsMailwardDidNotWriteAreNotPending) {
  state::PendingConfirm r;
  EXPECT_FALSE(state::ReadPending(kDir, &r, env));
  env.Put(kDir + "/pending-confirm", "not json");
  EXPECT_FALSE(state::ReadPending(kDir, &r, env));
  env.Put(kDir + "/pending-confirm", "[1]");
  EXPECT_FALSE(state::ReadPending(kDir, &r, env));
  env.Put(kDir + "/pending-confirm", R"({"snapshot": 5})");
  EXPECT_FALSE(state::ReadPending(kDir, &r, env));
  env.Put(kDir + "/pending-confirm", R"({"snapshot": "/etc/shadow"})");
  EXPECT_FALSE(state::ReadPending(kDir, &r, env));
  env.Put(kDir + "/pending-confirm", R"({"snapshot": "/var/lib/mailward/snapshots/1x.snap"})");
  EXPECT_FALSE(state::ReadPending(kDir, &r, env));
  EXPECT_TRUE(state::PendingRecordExists(kDir, env));  // damaged, but there
}

TEST_F(Pending, CommitMovesTheDeadlineAndLogs) {
  ASSERT_TRUE(state::WritePending(kDir, Record(), env).ok());
  env.now_ms += 5000;
  ASSERT_TRUE(state::CommitPending(kDir, 30, env).ok());
  state::PendingConfirm r;
  ASSERT_TRUE(state::ReadPending(kDir, &r, env));
  EXPECT_TRUE(r.committed);
  EXPECT_EQ(r.deadline_ms, env.now_ms + 30000);
  EXPECT_NE(env.Get(kDir + "/confirm.log").find("committed, pending confirmation: reverts to"), std::string::npos);
  // A log line starts with an ISO time in UTC with milliseconds.
  EXPECT_EQ(env.Get(kDir + "/confirm.log").substr(0, 24), "2023-11-14T22:13:25.000Z");
  env.files.erase(kDir + "/pending-confirm");
  EXPECT_EQ(state::CommitPending(kDir, 30, env).code(), Code::kIo);
}

TEST_F(Pending, DisarmConfirmAndEnd) {
  state::DisarmConfirm(kDir, "nothing", env);  // nothing pending: nothing logged
  EXPECT_FALSE(env.Has(kDir + "/confirm.log"));
  ASSERT_TRUE(state::WritePending(kDir, Record(), env).ok());
  state::DisarmConfirm(kDir, "the apply failed", env);
  EXPECT_FALSE(state::PendingRecordExists(kDir, env));
  EXPECT_NE(env.Get(kDir + "/confirm.log").find("disarmed, nothing to revert: the apply failed"), std::string::npos);

  EXPECT_FALSE(state::ConfirmPending(kDir, "confirmed", env));
  env.Put(kDir + "/pending-confirm", "damaged");
  EXPECT_TRUE(state::ConfirmPending(kDir, "confirmed", env));  // a damaged record is confirmed too
  EXPECT_FALSE(state::PendingRecordExists(kDir, env));
  EXPECT_NE(env.Get(kDir + "/confirm.log").find(" confirmed\n"), std::string::npos);

  ASSERT_TRUE(state::WritePending(kDir, Record(), env).ok());
  state::EndPending(kDir, "ended by rollback", env);
  EXPECT_FALSE(state::PendingRecordExists(kDir, env));
  EXPECT_NE(env.Get(kDir + "/confirm.log").find("ended by rollback"), std::string::npos);
}

TEST_F(Pending, StaleWhenAnotherBootOrTheWatchdogIsGone) {
  std::string why;
  state::PendingConfirm p = Record(42);
  const std::string wlock = state::WatchdogLockPath(kDir, 42);
  // The watchdog holds its lock: alive.
  env.Put(wlock, "");
  env.held_by_others.insert(wlock);
  EXPECT_FALSE(state::PendingIsStale(kDir, p, &why, env));
  EXPECT_TRUE(state::AnyWatchdogAlive(kDir, env));
  // It died: its lock is free, and its file is cleaned up.
  env.held_by_others.clear();
  EXPECT_TRUE(state::PendingIsStale(kDir, p, &why, env));
  EXPECT_NE(why.find("(pid 42) is gone"), std::string::npos) << why;
  EXPECT_FALSE(env.Has(wlock));
  EXPECT_FALSE(state::AnyWatchdogAlive(kDir, env));
  // No lock file (an older mailward): a live process named mailward-watch counts.
  env.Put("/proc/42/stat", "42 (mailward-watch) S 1 42");
  EXPECT_FALSE(state::PendingIsStale(kDir, p, &why, env));
  env.Put("/proc/42/stat", "42 (mailward-watch) Z 1 42");
  EXPECT_TRUE(state::PendingIsStale(kDir, p, &why, env));
  env.Put("/proc/42/stat", "42 (bash) S 1 42");
  EXPECT_TRUE(state::PendingIsStale(kDir, p, &why, env));
  env.Put("/proc/42/stat", "garbage");
  EXPECT_TRUE(state::PendingIsStale(kDir, p, &why, env));
  p.pid = 0;
  EXPECT_TRUE(state::PendingIsStale(kDir, p, &why, env));
  // Armed in another boot.
  p.boot_id = "boot-0";
  EXPECT_TRUE(state::PendingIsStale(kDir, p, &why, env));
  EXPECT_NE(why.find("rebooted (boot id boot-0)"), std::string::npos) << why;
  EXPECT_EQ(sys::BootId(env), "boot-1");
}

}  // namespace
}  // namespace mw
