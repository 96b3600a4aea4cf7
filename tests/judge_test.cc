// The judge names the owner of each conflict (firewalld zone, UFW, fail2ban jail, Docker, a table)
// and the command that resolves it, in that tool's own terms.
#include <cstdio>
#include <map>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>

#include <cstdio>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "analysis/ipt_eval.h"
#include "analysis/judge.h"
#include "analysis/nft_eval.h"

namespace mw::analysis {
namespace {

Cidr C(const char* s, int prefix) {
  Cidr c;
  std::string err;
  EXPECT_TRUE(ParseCidr(s, &c, &err)) << s;
  c.prefix = prefix;
  return c;
}

std::vector<Interface> Host() {
  return {Interface{"lo", {C("127.0.0.1", 8)}, true, false}, Interface{"eth0", {C("198.51.100.1", 24)}, false, false}};
}

using RulePtr = std::unique_ptr<nftnl_rule, void (*)(const nftnl_rule*)>;

/// `[ip saddr @set] verdict [chain]`.
RulePtr Rule(int32_t verdict, const char* chain = nullptr, const char* saddr_set = nullptr) {
  RulePtr r(nftnl_rule_alloc(), nftnl_rule_free);
  nftnl_rule_set_u32(r.get(), NFTNL_RULE_FAMILY, NFPROTO_INET);
  if (saddr_set) {
    nftnl_expr* p = nftnl_expr_alloc("payload");
    nftnl_expr_set_u32(p, NFTNL_EXPR_PAYLOAD_BASE, NFT_PAYLOAD_NETWORK_HEADER);
    nftnl_expr_set_u32(p, NFTNL_EXPR_PAYLOAD_OFFSET, 12);
    nftnl_expr_set_u32(p, NFTNL_EXPR_PAYLOAD_LEN, 4);
    nftnl_expr_set_u32(p, NFTNL_EXPR_PAYLOAD_DREG, NFT_REG_1);
    nftnl_rule_add_expr(r.get(), p);
    nftnl_expr* l = nftnl_expr_alloc("lookup");
    nftnl_expr_set_str(l, NFTNL_EXPR_LOOKUP_SET, saddr_set);
    nftnl_expr_set_u32(l, NFTNL_EXPR_LOOKUP_SREG, NFT_REG_1);
    nftnl_rule_add_expr(r.get(), l);
  }
  nftnl_expr* v = nftnl_expr_alloc("immediate");
  nftnl_expr_set_u32(v, NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
  nftnl_expr_set_u32(v, NFTNL_EXPR_IMM_VERDICT, static_cast<uint32_t>(verdict));
  if (chain) nftnl_expr_set_str(v, NFTNL_EXPR_IMM_CHAIN, chain);
  nftnl_rule_add_expr(r.get(), v);
  return r;
}

class Sets : public NftSets {
 public:
  std::set<std::vector<uint8_t>> members;
  uint32_t KeyLen(uint32_t, const std::string&, const std::string&) override { return 4; }
  std::optional<SetHit> Lookup(uint32_t, const std::string&, const std::string&, const std::vector<uint8_t>& key) override {
    SetHit h;
    h.found = members.count(key) > 0;
    return h;
  }
};

NftChainIn Chain(const char* table, const char* name, bool base = false) {
  NftChainIn c;
  c.family = NFPROTO_INET;
  c.table = table;
  c.name = name;
  c.base = base;
  c.hook = NF_INET_LOCAL_IN;
  return c;
}

PortClaim Closed(uint16_t port, const char* service, const char* office) {
  return PortClaim{port, service, false, {{"office", {C(office, 32)}}}};
}

TEST(Judge, FirewalldZoneOwnsItsDropsAndTheFixIsFirewallCmd) {
  std::vector<RulePtr> rules;
  rules.push_back(Rule(NFT_JUMP, "filter_IN_public"));
  rules.push_back(Rule(NFT_JUMP, "filter_IN_public_deny"));
  rules.push_back(Rule(NF_DROP));
  NftChainIn input = Chain("firewalld", "filter_INPUT", true);
  input.rules = {rules[0].get()};
  NftChainIn zone = Chain("firewalld", "filter_IN_public");
  zone.rules = {rules[1].get()};
  NftChainIn deny = Chain("firewalld", "filter_IN_public_deny");
  deny.rules = {rules[2].get()};
  Topology t;
  AddNftTables({input, zone, deny}, std::make_shared<Sets>(), &t);
  Judgement j = Judge(t, Host(), {PortClaim{993, "imaps", true, {}}, PortClaim{2000, "", true, {}},
                                  Closed(143, "imap", "203.0.113.5")});
  std::map<std::pair<std::string, uint16_t>, const Violation*> by;
  for (const auto& v : j.violations)
    if (v.family == Family::kV4) by[{ConflictKindName(v.kind), v.port}] = &v;
  const Violation* imaps = by[{"open-port-blocked", 993}];
  ASSERT_NE(imaps, nullptr);
  EXPECT_EQ(imaps->owner, "firewalld zone public");
  EXPECT_EQ(imaps->where, "table inet firewalld chain filter_IN_public_deny");
  EXPECT_EQ(imaps->fix, "firewall-cmd --permanent --zone=public --add-service=imaps && firewall-cmd --reload");
  const Violation* other = by[{"open-port-blocked", 2000}];
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(other->fix,
            "firewall-cmd --permanent --zone=public --add-port=2000/tcp && firewall-cmd --reload");
  const Violation* office = by[{"allowlist-blocked", 143}];
  ASSERT_NE(office, nullptr);
  EXPECT_EQ(office->source, "office (203.0.113.5)");
  EXPECT_EQ(office->fix,
            "firewall-cmd --permanent --zone=public --add-rich-rule='rule family=ipv4 source address=203.0.113.5 "
            "port port=143 protocol=tcp accept' && firewall-cmd --reload");
  EXPECT_EQ(std::string(ConflictKindName(ConflictKind::kClosedPortReachable)), "closed-port-reachable");
}

TEST(Judge, Fail2banSetInItsOwnTableNamesTheJail) {
  std::vector<RulePtr> rules;
  rules.push_back(Rule(NF_DROP, nullptr, "addr-set-dovecot"));
  NftChainIn in = Chain("f2b-table", "f2b-chain", true);
  in.rules = {rules[0].get()};
  auto sets = std::make_shared<Sets>();
  sets->members.insert({203, 0, 113, 5});
  Topology t;
  AddNftTables({in}, sets, &t);
  Judgement j = Judge(t, Host(), {PortClaim{143, "imap", false, {{"office", {C("203.0.113.5", 32)}}}}});
  const Violation* banned = nullptr;
  for (const auto& v : j.violations)
    if (v.kind == ConflictKind::kAllowlistBlocked) banned = &v;
  ASSERT_NE(banned, nullptr);
  EXPECT_EQ(banned->owner, "fail2ban jail dovecot");
  EXPECT_EQ(banned->fix, "fail2ban-client set dovecot unbanip 203.0.113.5 (and add it to ignoreip in jail.local)");
  // For an ordinary source the ban list is a restriction of some sources, not a conflict.
  ASSERT_FALSE(j.restrictions.empty());
  EXPECT_EQ(j.restrictions[0].owner, "fail2ban jail dovecot");
}

TEST(Judge, UfwOwnsAPolicyDropReachedThroughItsChains) {
  Topology t;
  AddIptablesTables("*filter\n:INPUT DROP [0:0]\n:ufw-before-input - [0:0]\n:ufw-user-input - [0:0]\n"
                    "-A INPUT -j ufw-before-input\n-A ufw-before-input -j ufw-user-input\n"
                    "-A ufw-user-input -s 203.0.113.5/32 -p tcp --dport 143 -j DROP\n"
                    "-A ufw-user-input -p tcp --dport 143 -j ACCEPT\nCOMMIT\n",
                    Family::kV4, false, nullptr, &t);
  Judgement j = Judge(t, Host(), {PortClaim{993, "imaps", true, {}}, Closed(143, "imap", "203.0.113.5")});
  std::map<std::string, const Violation*> by;
  for (const auto& v : j.violations)
    if (v.family == Family::kV4) by[ConflictKindName(v.kind)] = &v;
  ASSERT_TRUE(by.count("open-port-blocked"));
  EXPECT_EQ(by["open-port-blocked"]->owner, "UFW");  // INPUT's policy, but UFW manages it
  EXPECT_EQ(by["open-port-blocked"]->fix, "ufw allow 993/tcp");
  EXPECT_EQ(by["open-port-blocked"]->reason, "the chain's policy drop drops it");
  ASSERT_TRUE(by.count("allowlist-blocked"));
  EXPECT_EQ(by["allowlist-blocked"]->fix, "ufw allow from 203.0.113.5 to any port 143 proto tcp");
  // 143 from an ordinary source is accepted by UFW: reachable although closed in the policy.
  ASSERT_TRUE(by.count("closed-port-reachable"));
  EXPECT_EQ(by["closed-port-reachable"]->owner, "mailward");
  EXPECT_EQ(by["closed-port-reachable"]->fix, "mailward apply");
}

TEST(Judge, LegacyTablesAreNamedAndFixedWithTheLegacyTools) {
  // On a host with both rulesets, `iptables` is one of them: a fix must name the other's tool.
  for (bool legacy : {false, true}) {
    Topology t;
    AddIptablesTables("*filter\n:INPUT DROP [0:0]\nCOMMIT\n", Family::kV6, legacy, nullptr, &t);
    Judgement j = Judge(t, Host(), {PortClaim{993, "imaps", true, {}}});
    const Violation* v = nullptr;
    for (const auto& x : j.violations)
      if (x.family == Family::kV6) v = &x;
    ASSERT_NE(v, nullptr);
    std::string tool = legacy ? "ip6tables-legacy" : "ip6tables";
    EXPECT_EQ(v->where, tool + " filter chain INPUT");
    EXPECT_EQ(v->fix, tool + " -I INPUT -p tcp --dport 993 -j ACCEPT");
  }
}

TEST(Judge, PlainTablesGetTheirToolsInsertCommand) {
  Topology t;
  AddIptablesTables("*mangle\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -s 203.0.113.0/24 -j DROP\nCOMMIT\n",
                    Family::kV4, false, nullptr, &t);
  std::vector<RulePtr> rules;
  rules.push_back(Rule(NF_DROP, nullptr, "blocked"));
  NftChainIn in = Chain("fw", "input", true);
  in.rules = {rules[0].get()};
  auto sets = std::make_shared<Sets>();
  sets->members.insert({203, 0, 113, 5});
  AddNftTables({in}, sets, &t);
  Judgement j = Judge(t, Host(), {Closed(143, "imap", "203.0.113.5")});
  std::set<std::string> fixes;
  for (const auto& v : j.violations)
    if (v.kind == ConflictKind::kAllowlistBlocked) fixes.insert(v.fix);
  EXPECT_EQ(fixes, (std::set<std::string>{
                       "iptables -t mangle -I PREROUTING -s 203.0.113.5 -p tcp --dport 143 -j ACCEPT",
                       "nft insert rule inet fw input ip saddr 203.0.113.5 tcp dport 143 accept"}));
}

}  // namespace
}  // namespace mw::analysis
