#include "ops/lockout.h"
#include "state/pending.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "state/snapshots.h"
#include "util/fs.h"

namespace mw {
namespace {

using ops::CheckLockout;
using ops::FindSshSessions;
using ops::SshSession;
using state::PendingConfirm;
using state::PendingIsStale;
using state::ReadPending;
long long BootMs() { return sys::RealEnv().BootMs(); }

// /proc/net/tcp lines: local 198.51.100.1:22 <- 192.0.2.50:40000 established; a listener on 22;
// an established connection to port 993.
const char* kTcp =
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    "   0: 016433C6:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1\n"
    "   1: 016433C6:0016 320200C0:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2\n"
    "   2: 016433C6:03E1 330200C0:9C41 01 00000000:00000000 00:00000000 00000000     0        0 3\n";

Policy P(const std::string& extra) {
  auto p = ParsePolicyText("version: 1\nallowlists:\n  office: [198.51.100.0/24]\nports:\n" + extra);
  EXPECT_TRUE(p.ok()) << p.status().message();
  return *p;
}

TEST(Safety, FindsSessionsFromEnvAndProc) {
  auto s = FindSshSessions("203.0.113.7 51000 198.51.100.1 2222", {kTcp});
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].client, "203.0.113.7");
  EXPECT_EQ(s[0].port, 2222);
  EXPECT_EQ(s[1].client, "192.0.2.50");
  EXPECT_EQ(s[1].port, 22);
  EXPECT_TRUE(FindSshSessions(nullptr, {}).empty());
  EXPECT_TRUE(FindSshSessions("garbage", {}).empty());
}

TEST(Safety, MalformedProcRowsAreSkippedNotThrown) {
  // /proc/net/tcp rows with addresses that are not hex: skipped, never an exception.
  const char* bad =
      "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
      "   0: 016433C6:0016 ZZZZZZZZ:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2\n"
      "   1: 016433C6:0016 0000000000000000FFFF0000X20200C0:9C40 01 00000000:00000000 00:00000000 00000000 0 0 3\n"
      "   2: 016433C6:0016 320200C0:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4\n";
  auto s = FindSshSessions(nullptr, {bad});
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].client, "192.0.2.50");
}

TEST(Safety, LockoutRefusedOnlyWhenTheSessionsPortIsClosedToTheClient) {
  std::vector<SshSession> s = {{"192.0.2.50", 22, "SSH_CONNECTION"}};
  EXPECT_TRUE(CheckLockout(P("  imap: {state: closed}\n"), s).ok());
  Status st = CheckLockout(P("  ssh: {state: closed, port: 22}\n"), s);
  EXPECT_EQ(st.code(), Code::kRefused);
  EXPECT_NE(st.message().find("192.0.2.50"), std::string::npos);
  EXPECT_TRUE(CheckLockout(P("  ssh: {state: closed, port: 22, allow: [office]}\n"),
                           {{"198.51.100.9", 22, "SSH_CONNECTION"}}).ok());
  EXPECT_TRUE(CheckLockout(P("  ssh: {state: open, port: 22}\n"), s).ok());
  EXPECT_TRUE(CheckLockout(P("  ssh: {state: closed, port: 22}\n"), {{"127.0.0.1", 22, "x"}}).ok());
}


// sshd on 2222 (listening socket inode 10), a session to it from 192.0.2.60 (inode 11, held by
// the session's sshd child), a connection held by sshd on another port (inode 12, socket-activated
// sshd), and an unrelated established connection to 993 (inode 13).
const char* kTcpSshd =
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    "   0: 00000000:08AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 10 1 0\n"
    "   1: 016433C6:08AE 3C0200C0:9C40 01 00000000:00000000 00:00000000 00000000     0        0 11 1 0\n"
    "   2: 016433C6:1F90 3D0200C0:9C41 01 00000000:00000000 00:00000000 00000000     0        0 12 1 0\n"
    "   3: 016433C6:03E1 3E0200C0:9C42 01 00000000:00000000 00:00000000 00000000     0        0 13 1 0\n";

TEST(Safety, FindsSessionsToSshdOnAnyPort) {
  // Without knowing sshd's sockets, only port 22 counts: none of these.
  EXPECT_TRUE(FindSshSessions(nullptr, {kTcpSshd}).empty());
  auto s = FindSshSessions(nullptr, {kTcpSshd}, {10, 12});
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].client, "192.0.2.60");
  EXPECT_EQ(s[0].port, 2222);
  EXPECT_EQ(s[0].source, "sshd");
  EXPECT_EQ(s[1].client, "192.0.2.61");
  EXPECT_EQ(s[1].port, 8080);
  // The lockout check then refuses closing 2222 to that client.
  Status st = CheckLockout(P("  alt-ssh: {state: closed, port: 2222}\n"), s);
  EXPECT_EQ(st.code(), Code::kRefused);
  EXPECT_NE(st.message().find("2222"), std::string::npos);
  EXPECT_TRUE(CheckLockout(P("  imaps: {state: closed, port: 993}\n"), s).ok());
}

class ConfirmStateDir : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/mwsafetyXXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { (void)!std::system(("rm -rf '" + dir_ + "'").c_str()); }
  void Touch(const std::string& rel, const std::string& text = "x") {
    ASSERT_TRUE(MakeDirs(DirOf(dir_ + "/" + rel)).ok());
    std::ofstream(dir_ + "/" + rel) << text;
  }
  std::string dir_;
};

TEST_F(ConfirmStateDir, SnapshotsAreOrderedBySequenceNotByName) {
  // A snapshot named by an old microsecond clock that ran ahead, and newer sequence numbers:
  // ordering is numeric, and the next number is one more than the largest.
  Touch("snapshots/00001795530991876462.snap");
  Touch("snapshots/00000000000000000007.snap");
  Touch("snapshots/garbage.snap");
  auto l = ListSnapshots(dir_);
  ASSERT_TRUE(l.ok());
  ASSERT_EQ(l->size(), 2u);
  EXPECT_EQ((*l)[0].seq, 7u);
  EXPECT_EQ((*l)[1].seq, 1795530991876462u);
  EXPECT_EQ(NextSnapshotSeq(*l), 1795530991876463u);
  EXPECT_EQ(NextSnapshotSeq({}), 1u);
  auto saved = SaveSnapshot(dir_, Snapshot{"MWIPT1\n", ""}, 42);
  ASSERT_TRUE(saved.ok()) << saved.status().message();
  EXPECT_EQ(*saved, dir_ + "/snapshots/00001795530991876463.snap");
  // Saved uncommitted (with the generation) until the apply commits.
  auto marker = ReadFile(dir_ + "/snapshots/00001795530991876463.uncommitted");
  ASSERT_TRUE(marker.ok());
  EXPECT_EQ(*marker, "42\n");
  MarkCommitted(*saved);
  EXPECT_FALSE(Exists(dir_ + "/snapshots/00001795530991876463.uncommitted"));
  RemoveSnapshot(*saved);
  EXPECT_FALSE(Exists(*saved));
}

TEST_F(ConfirmStateDir, PendingWithADeadWatchdogOrAnotherBootIsStale) {
  ASSERT_FALSE(sys::BootId(sys::RealEnv()).empty());
  std::string why;
  PendingConfirm p;
  p.snapshot = dir_ + "/snapshots/1.snap";
  p.boot_id = sys::BootId(sys::RealEnv());
  p.pid = getpid();  // alive, but not a mailward-watch process
  EXPECT_TRUE(PendingIsStale(dir_, p, &why));
  EXPECT_NE(why.find("is gone"), std::string::npos) << why;
  // A watchdog proves it lives by holding its lock file, whatever /proc shows.
  std::string lock = dir_ + "/watchdog-" + std::to_string(getpid()) + ".lock";
  int fd = open(lock.c_str(), O_RDWR | O_CREAT, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(flock(fd, LOCK_EX), 0);
  EXPECT_FALSE(PendingIsStale(dir_, p, &why));
  close(fd);  // the watchdog died: the lock is free and its file is cleaned up
  EXPECT_TRUE(PendingIsStale(dir_, p, &why));
  EXPECT_FALSE(Exists(lock));
  p.pid = 0x3fffffff;  // no such process
  EXPECT_TRUE(PendingIsStale(dir_, p, &why));
  p.boot_id = "00000000-0000-0000-0000-000000000000";
  EXPECT_TRUE(PendingIsStale(dir_, p, &why));
  EXPECT_NE(why.find("rebooted"), std::string::npos) << why;
  // A record with fields of the wrong type is not a pending confirm (no exception).
  Touch("pending-confirm", "{\"snapshot\": 5, \"pid\": \"x\"}");
  EXPECT_FALSE(ReadPending(dir_, &p));
  // Nor one that points outside the state directory's snapshots.
  Touch("pending-confirm", "{\"snapshot\": \"/etc/shadow\", \"pid\": 12}");
  EXPECT_FALSE(ReadPending(dir_, &p));
  Touch("pending-confirm", "{\"snapshot\": \"" + dir_ + "/snapshots/../../x.snap\", \"pid\": 12}");
  EXPECT_FALSE(ReadPending(dir_, &p));
  const std::string snap = dir_ + "/snapshots/00000000000000000001.snap";
  Touch("pending-confirm", "{\"snapshot\": \"" + snap + "\", \"pid\": 12, \"deadline_ms\": 99, \"boot_id\": \"b\"}");
  ASSERT_TRUE(ReadPending(dir_, &p));
  EXPECT_EQ(p.snapshot, snap);
  EXPECT_EQ(p.pid, 12);
  EXPECT_EQ(p.deadline_ms, 99);
  EXPECT_EQ(p.boot_id, "b");
}

TEST(Safety, BootClockIsMilliseconds) {
  long long a = BootMs();
  usleep(20000);
  long long b = BootMs();
  EXPECT_GE(b - a, 20);
  EXPECT_LT(b - a, 5000);
}

}  // namespace
}  // namespace mw
