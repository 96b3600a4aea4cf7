// RealEnv, the POSIX side of the Env seam, on a temporary directory of its own: files, links,
// listings, modes, locks (held, refused, waited for until the deadline), programs, the
// environment and the clock.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>

#include "sys/env.h"
#include "util/status.h"

namespace mw::sys {
namespace {

class RealEnvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/mw-realenv-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (const char* f : {"a.snap", "b.snap", "c.txt", "lock", "sub/x"}) unlink((dir_ + "/" + f).c_str());
    rmdir((dir_ + "/sub").c_str());
    rmdir(dir_.c_str());
  }
  std::string dir_;
  Env& env_ = RealEnv();
};

TEST_F(RealEnvTest, Files) {
  std::string a = dir_ + "/a.snap";
  ASSERT_TRUE(env_.WriteFileAtomic(a, "hello", Durability::kNoFsync, 0640).ok());
  EXPECT_TRUE(env_.Exists(a));
  auto text = env_.ReadFile(a, Follow::kNoSymlinks);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "hello");
  EXPECT_EQ(env_.FileMode(a), 0640u);
  EXPECT_FALSE(env_.FileMode(dir_ + "/missing").has_value());
  ASSERT_TRUE(env_.Link(a, dir_ + "/b.snap").ok());
  EXPECT_FALSE(env_.Link(a, dir_ + "/b.snap").ok());  // exists
  ASSERT_TRUE(env_.WriteFileAtomic(dir_ + "/c.txt", "", Durability::kFsync).ok());
  auto snaps = env_.ListFiles(dir_, ".snap");
  ASSERT_TRUE(snaps.ok());
  EXPECT_EQ(snaps->size(), 2u);
  ASSERT_TRUE(env_.MakeDirs(dir_ + "/sub").ok());
  EXPECT_TRUE(env_.Exists(dir_ + "/sub"));
  ASSERT_TRUE(env_.RemoveFile(dir_ + "/b.snap").ok());
  EXPECT_TRUE(env_.RemoveFile(dir_ + "/b.snap").ok());  // a missing file is OK
  EXPECT_FALSE(env_.RemoveFile(dir_ + "/sub").ok());    // a directory is not a file
  EXPECT_FALSE(env_.ReadFile(dir_ + "/missing", Follow::kSymlinks).ok());
  (void)env_.CheckTrusted(dir_, TrustedKind::kStateDir);
}

TEST_F(RealEnvTest, Locks) {
  std::string path = dir_ + "/lock";
  auto held = env_.TryLock(path, LockInherit::kNo);
  ASSERT_TRUE(held.ok());
  ASSERT_TRUE(*held);
  // flock locks belong to the open file: a second open in this process is refused too.
  auto again = env_.TryLock(path, LockInherit::kByChildren);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again);
  auto waited = env_.LockFile(path, 0.05, 10, LockInherit::kNo, "busy: another holds it");
  EXPECT_EQ(waited.status().code(), Code::kBusy);
  EXPECT_EQ(waited.status().message(), "busy: another holds it");
  held->reset();
  auto now = env_.LockFile(path, 1, 10, LockInherit::kNo, "busy");
  ASSERT_TRUE(now.ok());
  EXPECT_TRUE(*now);
  EXPECT_FALSE(env_.TryLock(dir_ + "/sub/none/lock", LockInherit::kNo).ok());  // no such directory
  EXPECT_FALSE(env_.LockFile(dir_ + "/sub/none/lock", 0, 1, LockInherit::kNo, "busy").ok());
}

TEST_F(RealEnvTest, ProgramsEnvironmentAndClock) {
  ProcessResult r = env_.Run({"/bin/sh", "-c", "cat; echo err >&2"}, "in");
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r.out, "in");
  EXPECT_TRUE(env_.HaveProgram("sh"));
  EXPECT_FALSE(env_.HaveProgram("no-such-program-mailward"));
  setenv("MW_REAL_ENV_TEST", "x", 1);
  EXPECT_EQ(env_.GetEnv("MW_REAL_ENV_TEST"), "x");
  unsetenv("MW_REAL_ENV_TEST");
  EXPECT_FALSE(env_.GetEnv("MW_REAL_ENV_TEST").has_value());
  int64_t t0 = env_.MonotonicMs();
  env_.SleepMs(5);
  EXPECT_GE(env_.MonotonicMs() - t0, 5);
  EXPECT_GT(env_.UnixSeconds(), 1'600'000'000);
}

}  // namespace
}  // namespace mw::sys
