// ops/lockout.h: the SSH sessions an apply must not cut, found through FakeEnv's /proc.
#include "ops/lockout.h"

#include <gtest/gtest.h>

#include "fakes/fake_env.h"

namespace mw {
namespace {

using testing::FakeEnv;

// sshd listens on 2222 (inode 9); 192.0.2.50:40000 is connected to it (inode 10); another
// connection reaches port 993.
const char* kTcp =
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    "   0: 016433C6:08AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 9\n"
    "   1: 016433C6:08AE 320200C0:9C40 01 00000000:00000000 00:00000000 00000000     0        0 10\n"
    "   2: 016433C6:03E1 330200C0:9C41 01 00000000:00000000 00:00000000 00000000     0        0 11\n";

Policy P(const std::string& ports) {
  auto p = ParsePolicyText("version: 1\nallowlists:\n  office: [198.51.100.0/24]\nports:\n" + ports);
  EXPECT_TRUE(p.ok()) << p.status().message();
  return *p;
}

class Lockout : public ::testing::Test {
 protected:
  void SetUp() override {
    env.Put("/proc/net/tcp", kTcp);
    env.Put("/proc/100/comm", "sshd\n");
    env.links["/proc/100/fd/3"] = "socket:[9]";
    env.links["/proc/100/fd/4"] = "/dev/null";
    env.Put("/proc/100/fd/3", "");  // entries ListEntries finds
    env.Put("/proc/100/fd/4", "");
    env.Put("/proc/200/comm", "bash\n");
    env.Put("/proc/self/comm", "mailward\n");
  }
  FakeEnv env;
};

TEST_F(Lockout, SshdOnAnyPortIsFoundThroughItsSockets) {
  EXPECT_EQ(ops::SshdSocketInodes(env), (std::set<uint64_t>{9}));
  auto s = ops::SshSessionsFor(P("  ssh: {state: closed, port: 2222}\n"), env);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].client, "192.0.2.50");
  EXPECT_EQ(s[0].port, 2222);
  EXPECT_EQ(s[0].source, "sshd");
  Status lo = ops::CheckLockout(P("  ssh: {state: closed, port: 2222}\n"), s);
  EXPECT_EQ(lo.code(), Code::kRefused);
  EXPECT_NE(lo.message().find("closes port 2222 ('ssh'"), std::string::npos) << lo.message();
  // Allowlisted, the client keeps its session.
  EXPECT_TRUE(ops::CheckLockout(P("  ssh: {state: closed, port: 2222, allow: [office]}\n"),
                                {{"198.51.100.7", 2222, "sshd"}})
                  .ok());
}

TEST_F(Lockout, NothingClosedReadsOnlySshConnection) {
  env.env_vars["SSH_CONNECTION"] = "203.0.113.7 51000 198.51.100.1 22";
  auto s = ops::SshSessionsFor(P("  imaps: {state: open}\n"), env);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].source, "SSH_CONNECTION");
  // With no connection to a closed port, sshd's sockets are not looked at.
  s = ops::SshSessionsFor(P("  smtp: {state: closed}\n"), env);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(ops::FindSshSessions(env).size(), 2u);
}

}  // namespace
}  // namespace mw
