// Walk paths of the reachability engine not exercised elsewhere: routing with forwarding off,
// device-bound ingress chains, returns into a base chain's policy, undecidable destination
// rewrites, the branch budget.
#include <cstdio>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "analysis/ipt_eval.h"
#include "analysis/nft_eval.h"
#include "analysis/reach.h"

namespace mw::analysis {
namespace {

Cidr C(const char* s, int prefix) {
  Cidr c;
  std::string err;
  EXPECT_TRUE(ParseCidr(s, &c, &err)) << s;
  c.prefix = prefix;
  return c;
}

Flow F(uint16_t port, const char* iif = nullptr) {
  Flow f;
  f.dport = port;
  f.interfaces = {Interface{"lo", {C("127.0.0.1", 8)}, true, false},
                  Interface{"eth0", {C("198.51.100.1", 24)}, false, false},
                  Interface{"eth1", {C("192.0.2.1", 24)}, false, false},
                  Interface{"docker0", {C("172.17.0.1", 16)}, false, true}};
  f.daddr = C("198.51.100.1", 32).addr;
  if (iif) f.iif = iif;
  return f;
}

Topology Ipt(const std::string& save) {
  Topology t;
  AddIptablesTables(save, Family::kV4, false, nullptr, &t);
  return t;
}

using RulePtr = std::unique_ptr<nftnl_rule, void (*)(const nftnl_rule*)>;

RulePtr NewRule() {
  RulePtr r(nftnl_rule_alloc(), nftnl_rule_free);
  nftnl_rule_set_u32(r.get(), NFTNL_RULE_FAMILY, NFPROTO_NETDEV);
  return r;
}
void Verdict_(nftnl_rule* r, int32_t v) {
  nftnl_expr* e = nftnl_expr_alloc("immediate");
  nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
  nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_VERDICT, static_cast<uint32_t>(v));
  nftnl_rule_add_expr(r, e);
}

const char* kDnat = "*nat\n:PREROUTING ACCEPT [0:0]\n"
                    "-A PREROUTING -p tcp --dport 143 -j DNAT --to-destination 172.17.0.2:143\nCOMMIT\n";

TEST(ReachPaths, ADnatToAContainerNeedsForwarding) {
  Topology t = Ipt(kDnat);
  Flow on = F(143);
  Verdict v = Walk(t, on);
  EXPECT_EQ(v.reach, Reach::kReaches);
  EXPECT_EQ(v.destination, "172.17.0.2:143");
  Flow off = F(143);
  off.forwarding = false;
  Verdict b = Walk(t, off);
  EXPECT_EQ(b.reach, Reach::kBlocked);
  ASSERT_TRUE(b.decided_by.has_value());
  EXPECT_EQ(b.decided_by->table, "routing");
  EXPECT_EQ(b.decided_by->rule, "forwarding is off for this family");
}

TEST(ReachPaths, IngressChainsBoundToDevicesSeeOnlyTheirDevices) {
  RulePtr drop = NewRule();
  Verdict_(drop.get(), NF_DROP);
  NftChainIn in;
  in.family = NFPROTO_NETDEV;
  in.table = "edge";
  in.name = "ingress";
  in.base = true;
  in.hook = NF_NETDEV_INGRESS;
  in.devices = {"eth1"};
  in.rules = {drop.get()};
  NftChainIn bad = in;  // a netdev chain on a hook mailward does not walk: ignored
  bad.name = "egress";
  bad.hook = 1;
  Topology t;
  AddNftTables({in, bad}, nullptr, &t);
  EXPECT_EQ(Walk(t, F(143, "eth0")).reach, Reach::kReaches);
  Verdict v = Walk(t, F(143, "eth1"));
  EXPECT_EQ(v.reach, Reach::kBlocked);
  EXPECT_EQ(v.decided_by->table, "table netdev edge");
  ASSERT_EQ(t.tables.size(), 1u);
  EXPECT_EQ(t.tables[0].bases.size(), 1u);
  // A base chain whose chain went missing (hand-made input): nothing to run.
  t.tables[0].bases[0].chain = "gone";
  EXPECT_EQ(Walk(t, F(143, "eth1")).reach, Reach::kReaches);
}

TEST(ReachPaths, AReturnFromTheBaseChainMeetsItsPolicy) {
  Topology t = Ipt("*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp --dport 993 -j ACCEPT\n"
                   "-A INPUT -p tcp --dport 143 -j RETURN\n-A INPUT -j ACCEPT\nCOMMIT\n");
  EXPECT_EQ(Walk(t, F(993)).reach, Reach::kReaches);
  Verdict v = Walk(t, F(143));
  EXPECT_EQ(v.reach, Reach::kBlocked);
  EXPECT_EQ(v.decided_by->rule, "policy drop");
  EXPECT_EQ(Walk(t, F(110)).reach, Reach::kReaches);
}

TEST(ReachPaths, TheBranchBudgetEndsInMaybe) {
  // Every rule undecidable (an interface the flow does not name): 2^n branches.
  std::string save = "*filter\n:INPUT ACCEPT [0:0]\n";
  for (int i = 0; i < 12; ++i) save += "-A INPUT -i wg" + std::to_string(i) + " -j MARK --set-mark " + std::to_string(i) + "\n";
  save += "-A INPUT -m mark --mark 0x5 -j DROP\nCOMMIT\n";
  Topology t = Ipt(save);
  WalkOptions small;
  small.max_branches = 4;
  Verdict v = Walk(t, F(143), small);
  EXPECT_EQ(v.reach, Reach::kMaybeBlocked);
}

TEST(ReachPaths, NamesAndFamilies) {
  EXPECT_STREQ(HookName(Hook::kIngress), "ingress");
  EXPECT_STREQ(HookName(Hook::kPrerouting), "prerouting");
  EXPECT_STREQ(HookName(Hook::kInput), "input");
  EXPECT_STREQ(HookName(Hook::kForward), "forward");
  EXPECT_STREQ(ReachName(Reach::kReaches), "reaches");
  EXPECT_STREQ(ReachName(Reach::kBlocked), "blocked");
  EXPECT_STREQ(ReachName(Reach::kMaybeBlocked), "may be blocked");
  Table bridge;
  bridge.family = "bridge";
  EXPECT_FALSE(bridge.Applies(Family::kV4));  // bridged frames do not reach this host's input
  Table ip6;
  ip6.family = "ip6tables";
  EXPECT_TRUE(ip6.Applies(Family::kV6));
  EXPECT_FALSE(ip6.Applies(Family::kV4));
  Table odd;
  odd.family = "arp";
  EXPECT_FALSE(odd.Applies(Family::kV4));
}

}  // namespace
}  // namespace mw::analysis
