// `mailward init`: the listeners read from /proc/net/tcp text and the starter policy built from
// them is valid and closes the cleartext ports.
#include <gtest/gtest.h>

#include "cli/init_cmd.h"
#include "policy/policy.h"

namespace mw {
namespace {

const char* kTcp =
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    "   0: 00000000:008F 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n"
    "   1: 0100007F:006E 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1\n"
    "   2: 0100007F:8F2A 0100007F:006E 01 00000000:00000000 00:00000000 00000000     0        0 3 1\n";
const char* kTcp6 =
    "  sl  local_address                         remote_address                        st\n"
    "   0: 00000000000000000000000000000000:03E1 00000000000000000000000000000000:0000 0A 0\n";

TEST(Init, ListenersFromProcNetTcp) {
  auto l = ParseListeners(kTcp);
  ASSERT_EQ(l.size(), 2u);  // the established connection is not a listener
  EXPECT_EQ(l[0].port, 143);
  EXPECT_FALSE(l[0].loopback_only);
  EXPECT_EQ(l[1].port, 110);
  EXPECT_TRUE(l[1].loopback_only);
  auto l6 = ParseListeners(kTcp6);
  ASSERT_EQ(l6.size(), 1u);
  EXPECT_EQ(l6[0].port, 993);
}

TEST(Init, StarterPolicyIsValidAndClosesCleartextPorts) {
  auto l = ParseListeners(kTcp);
  for (auto& x : ParseListeners(kTcp6)) l.push_back(x);
  std::string text = StarterPolicy(l, true, "198.51.100.7");
  auto p = ParsePolicyText(text);
  ASSERT_TRUE(p.ok()) << p.status().message() << "\n" << text;
  ASSERT_EQ(p->ports.size(), 3u);
  for (const auto& port : p->ports) {
    if (port.port == 993) EXPECT_EQ(port.state, PortState::kOpen);
    else EXPECT_EQ(port.state, PortState::kClosed) << port.port;
  }
  EXPECT_TRUE(p->dovecot.enabled);
  EXPECT_TRUE(InAllowlists(*p, p->ports[0], "198.51.100.7"));  // the SSH client may still use them
  // Nothing listening: still a valid, useful policy.
  auto none = ParsePolicyText(StarterPolicy({}, false, ""));
  ASSERT_TRUE(none.ok()) << none.status().message();
  EXPECT_FALSE(none->dovecot.enabled);
}

}  // namespace
}  // namespace mw
