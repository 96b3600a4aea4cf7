#include "cli/safety.h"

#include <gtest/gtest.h>

namespace mw {
namespace {

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

}  // namespace
}  // namespace mw
