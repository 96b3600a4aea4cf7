// The reachability engine on rulesets read from text (iptables-save), and on nftables rules built
// with libnftnl the way the kernel returns them.
#include <gtest/gtest.h>

#include <set>

#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>

#include "analysis/ipt_eval.h"
#include "analysis/judge.h"
#include "analysis/nft_eval.h"
#include "analysis/reach.h"
#include "backend/nft/nft_codec.h"
#include "model/ruleset.h"
#include "policy/policy.h"

namespace mw::analysis {
namespace {

Addr A(const std::string& s) {
  Cidr c;
  std::string err;
  EXPECT_TRUE(ParseCidr(s, &c, &err)) << s;
  return c.addr;
}

Cidr C(const std::string& s) {
  Cidr c;
  std::string err;
  EXPECT_TRUE(ParseCidr(s, &c, &err)) << s;
  return c;
}

/// A host with an uplink 198.51.100.1/24 on eth0 and Docker's bridge 172.17.0.1/16.
std::vector<Interface> Host() {
  Cidr l = C("127.0.0.1");
  l.prefix = 8;
  Interface lo{"lo", {l}, true, false};
  Interface eth{"eth0", {}, false, false};
  Cidr e = C("198.51.100.1");
  e.prefix = 24;
  eth.addresses.push_back(e);
  Interface docker{"docker0", {}, false, true};
  Cidr d = C("172.17.0.1");
  d.prefix = 16;
  docker.addresses.push_back(d);
  return {lo, eth, docker};
}

Flow V4(uint16_t port, std::optional<std::string> from = std::nullopt) {
  Flow f = CandidateFlows(Host(), Family::kV4, port).front();
  if (from) f.saddr = A(*from);
  return f;
}

Topology Ipt(const std::string& save, std::shared_ptr<const Ipsets> sets = nullptr) {
  Topology t;
  AddIptablesTables(save, Family::kV4, false, sets, &t);
  return t;
}

// Docker publishing 143 of a container (the rules dockerd 20.10 writes).
const char* kDocker = R"(*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 143 -j DNAT --to-destination 172.17.0.2:143
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 143 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
)";

TEST(Reach, DockerPublishedPortReachesTheContainerThroughForward) {
  Topology t = Ipt(kDocker);
  Verdict v = Walk(t, V4(143));
  EXPECT_EQ(v.reach, Reach::kReaches);
  EXPECT_EQ(v.destination, "172.17.0.2:143");
  bool via_forward = false;
  for (const auto& s : v.path) via_forward |= s.chain == "DOCKER" && s.table == "iptables filter";
  EXPECT_TRUE(via_forward);
  // Another port is not DNATed: it reaches this host itself.
  EXPECT_EQ(Walk(t, V4(993)).destination, "this host");
}

TEST(Reach, JudgeReportsTheDnatBypassWithDockerAsOwner) {
  PortClaim imap{143, "imap", false, {}};
  Judgement j = Judge(Ipt(kDocker), Host(), {imap});
  ASSERT_FALSE(j.violations.empty());
  const Violation& v = j.violations.front();
  EXPECT_EQ(v.kind, ConflictKind::kClosedPortReachable);
  EXPECT_EQ(v.owner, "Docker");
  EXPECT_EQ(v.destination, "172.17.0.2:143");
  EXPECT_NE(v.fix.find("mailward apply"), std::string::npos);
}

TEST(Reach, Fail2banBansAreSourceRestrictionsNotConflicts) {
  const char* f2b = R"(*filter
:INPUT ACCEPT [0:0]
:f2b-dovecot - [0:0]
-A INPUT -p tcp -m multiport --dports 110,143,993,995 -j f2b-dovecot
-A f2b-dovecot -s 192.0.2.9/32 -j REJECT --reject-with icmp-port-unreachable
-A f2b-dovecot -j RETURN
COMMIT
)";
  Topology t = Ipt(f2b);
  Verdict v = Walk(t, V4(993));
  EXPECT_EQ(v.reach, Reach::kReaches);
  ASSERT_EQ(v.restrictions.size(), 1u);
  EXPECT_EQ(v.restrictions[0].chain, "f2b-dovecot");
  // The banned source itself is blocked, decided exactly.
  Verdict banned = Walk(t, V4(993, "192.0.2.9"));
  EXPECT_EQ(banned.reach, Reach::kBlocked);
  EXPECT_EQ(banned.decided_by->chain, "f2b-dovecot");
  PortClaim imaps{993, "imaps", true, {}};
  Judgement j = Judge(t, Host(), {imaps});
  EXPECT_TRUE(j.violations.empty());
  ASSERT_EQ(j.restrictions.size(), 1u);
  EXPECT_EQ(j.restrictions[0].owner, "fail2ban jail dovecot");
}

TEST(Reach, IpsetBanListIsDecidedForAGivenSource) {
  auto sets = std::make_shared<Ipsets>(ParseIpsetSave("create f2b-sshd hash:ip family inet hashsize 1024 maxelem 65536\n"
                                                      "add f2b-sshd 203.0.113.5\n"));
  const char* rules = "*filter\n:INPUT ACCEPT [0:0]\n"
                      "-A INPUT -p tcp -m multiport --dports 993 -m set --match-set f2b-sshd src -j DROP\nCOMMIT\n";
  Topology t = Ipt(rules, sets);
  EXPECT_EQ(Walk(t, V4(993)).reach, Reach::kReaches);
  EXPECT_EQ(Walk(t, V4(993, "203.0.113.5")).reach, Reach::kBlocked);
  EXPECT_EQ(Walk(t, V4(993, "203.0.113.6")).reach, Reach::kReaches);
}

TEST(Reach, PolicyDropBlocksAndAnAcceptBeforeItDoesNot) {
  EXPECT_EQ(Walk(Ipt("*filter\n:INPUT DROP [0:0]\nCOMMIT\n"), V4(993)).reach, Reach::kBlocked);
  EXPECT_EQ(Walk(Ipt("*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp -m multiport --dports 25,990:995 -j ACCEPT\nCOMMIT\n"),
                 V4(993)).reach,
            Reach::kReaches);
  // Established/invalid/udp/lo rules do not touch a new TCP connection from the network.
  EXPECT_EQ(Walk(Ipt("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m conntrack --ctstate INVALID -j DROP\n"
                     "-A INPUT -i lo -j DROP\n-A INPUT -p udp --dport 993 -j DROP\nCOMMIT\n"),
                 V4(993)).reach,
            Reach::kReaches);
}

TEST(Reach, AnAcceptOnlyForSomeSourcesLeavesOrdinarySourcesToThePolicyDrop) {
  // The ordinary source is not in 10.0.0.0/8: it meets the policy drop; a source inside does not.
  Topology t = Ipt("*filter\n:INPUT DROP [0:0]\n-A INPUT -s 10.0.0.0/8 -j ACCEPT\nCOMMIT\n");
  EXPECT_EQ(Walk(t, V4(993)).reach, Reach::kBlocked);
  EXPECT_EQ(Walk(t, V4(993, "10.1.2.3")).reach, Reach::kReaches);
  // "everyone but": a negated source match hits an ordinary source.
  Topology n = Ipt("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT ! -s 10.0.0.0/8 -p tcp --dport 143 -j DROP\nCOMMIT\n");
  EXPECT_EQ(Walk(n, V4(143)).reach, Reach::kBlocked);
  EXPECT_EQ(Walk(n, V4(143, "10.9.9.9")).reach, Reach::kReaches);
}

TEST(Reach, UndecidableMatchesForkIntoMayBeBlocked) {
  Topology t = Ipt("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 993 -m limit --limit 5/min -j ACCEPT\n"
                   "-A INPUT -p tcp --dport 993 -j DROP\nCOMMIT\n");
  Verdict v = Walk(t, V4(993));
  EXPECT_EQ(v.reach, Reach::kMaybeBlocked);
  ASSERT_TRUE(v.decided_by);
  EXPECT_NE(v.decided_by->rule.find("-j DROP"), std::string::npos);
}

TEST(Reach, AllowlistBlockedElsewhereIsReported) {
  // mailward lets 198.51.100.3 reach 143, but an admin's table drops everything but 993.
  Topology t = Ipt("*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp --dport 993 -j ACCEPT\nCOMMIT\n");
  PortClaim imap{143, "imap", false, {{"office", {C("198.51.100.3")}}}};
  Judgement j = Judge(t, Host(), {imap});
  bool found = false;
  for (const auto& v : j.violations)
    if (v.kind == ConflictKind::kAllowlistBlocked) {
      found = true;
      EXPECT_EQ(v.source, "office (198.51.100.3)");
      EXPECT_NE(v.fix.find("iptables -I INPUT -s 198.51.100.3 -p tcp --dport 143 -j ACCEPT"), std::string::npos) << v.fix;
    }
  EXPECT_TRUE(found);
}

TEST(Reach, MarksSetEarlierOnThePathAreFollowed) {
  Topology t = Ipt("*mangle\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p tcp --dport 143 -j MARK --set-xmark 0x1/0xffffffff\nCOMMIT\n"
                   "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m mark --mark 0x1 -j DROP\nCOMMIT\n");
  EXPECT_EQ(Walk(t, V4(143)).reach, Reach::kBlocked);
  EXPECT_EQ(Walk(t, V4(993)).reach, Reach::kReaches);
}

TEST(Reach, UfwStyleAllowListedPortAndDefaultDeny) {
  const char* ufw = R"(*filter
:INPUT DROP [0:0]
:ufw-before-input - [0:0]
:ufw-user-input - [0:0]
-A INPUT -j ufw-before-input
-A INPUT -j ufw-user-input
-A ufw-before-input -i lo -j ACCEPT
-A ufw-before-input -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A ufw-user-input -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
)";
  Topology t = Ipt(ufw);
  PortClaim imaps{993, "imaps", true, {}};
  Judgement j = Judge(t, Host(), {imaps});
  ASSERT_EQ(j.violations.size(), 1u);
  EXPECT_EQ(j.violations[0].owner, "UFW");
  EXPECT_EQ(j.violations[0].fix, "ufw allow 993/tcp");
}

// ---- nftables rules, as libnftnl objects ----------------------------------------------------

struct Sets : NftSets {
  std::map<std::string, std::vector<std::vector<uint8_t>>> contents;
  uint32_t KeyLen(uint32_t, const std::string&, const std::string& set) override {
    auto it = contents.find(set);
    return it == contents.end() || it->second.empty() ? 4 : static_cast<uint32_t>(it->second.front().size());
  }
  std::optional<SetHit> Lookup(uint32_t, const std::string&, const std::string& set,
                               const std::vector<uint8_t>& key) override {
    SetHit h;
    for (const auto& k : contents[set]) h.found |= k == key;
    return h;
  }
};

TEST(Reach, MailwardsOwnNftablesChainBlocksTheDnatPathBeforeDocker) {
  // mailward's rules as nft_codec builds them, on prerouting at -150, before Docker's DNAT.
  Policy p;
  PortPolicy imap;
  imap.name = "imap";
  imap.port = 143;
  imap.state = PortState::kClosed;
  imap.allow = {"office"};
  p.ports.push_back(imap);
  Allowlist office;
  office.name = "office";
  office.entries = {C("198.51.100.3")};
  p.allowlists["office"] = office;
  Ruleset rs = BuildRuleset(p);
  std::vector<nft::RulePtr> owned;
  NftChainIn chain;
  chain.family = NFPROTO_INET;
  chain.table = "mailward";
  chain.name = "prerouting";
  chain.base = true;
  chain.hook = NF_INET_PRE_ROUTING;
  chain.priority = -150;
  for (const auto& r : rs.rules) {
    owned.push_back(nft::BuildRule(r));
    chain.rules.push_back(owned.back().get());
  }
  auto sets = std::make_shared<Sets>();
  sets->contents["allow_office_hosts_v4"] = {{198, 51, 100, 3}};
  Topology t = Ipt(kDocker);
  AddNftTables({chain}, sets, &t);
  Verdict plain = Walk(t, V4(143, "203.0.113.7"));
  EXPECT_EQ(plain.reach, Reach::kBlocked);
  EXPECT_EQ(plain.decided_by->table, "table inet mailward");
  EXPECT_EQ(plain.decided_by->rule, "tcp dport 143 ct state new drop");
  Verdict ok = Walk(t, V4(143, "198.51.100.3"));
  EXPECT_EQ(ok.reach, Reach::kReaches);
  EXPECT_EQ(ok.destination, "172.17.0.2:143");
  // An ordinary source: blocked; the judge is content.
  PortClaim claim{143, "imap", false, {{"office", office.entries}}};
  EXPECT_TRUE(Judge(t, Host(), {claim}).violations.empty());
}

TEST(Reach, ShardedAllowlistIsEvaluatedShardByShard) {
  // A host set over kHostsPerShard is written as shards, each behind a mask compare: a listed
  // source reaches (through its own shard only), an unlisted or ordinary one is blocked.
  Policy p;
  PortPolicy imap;
  imap.name = "imap";
  imap.port = 143;
  imap.state = PortState::kClosed;
  imap.allow = {"big"};
  p.ports.push_back(imap);
  Allowlist big;
  big.name = "big";
  for (size_t i = 0; i < kHostsPerShard * 3; ++i)
    big.entries.push_back(C("10." + std::to_string(i >> 16 & 255) + "." + std::to_string(i >> 8 & 255) + "." +
                            std::to_string(i & 255)));
  p.allowlists["big"] = big;
  Ruleset rs = ShardHostSets(BuildRuleset(p));
  std::vector<nft::RulePtr> owned;
  NftChainIn chain;
  chain.family = NFPROTO_INET;
  chain.table = "mailward";
  chain.name = "prerouting";
  chain.base = true;
  chain.hook = NF_INET_PRE_ROUTING;
  chain.priority = -150;
  for (const auto& r : rs.rules) {
    owned.push_back(nft::BuildRule(r));
    chain.rules.push_back(owned.back().get());
  }
  auto sets = std::make_shared<Sets>();
  size_t shards = 0;
  for (const auto& s : rs.sets) {
    ++shards;
    for (const auto& iv : s.intervals) sets->contents[s.spec.name].push_back({iv.start.b.begin(), iv.start.b.begin() + 4});
  }
  ASSERT_EQ(shards, 4u);
  Topology t;
  AddNftTables({chain}, sets, &t);
  for (const char* listed : {"10.0.0.0", "10.0.0.1", "10.1.2.3", "10.1.127.255"})
    EXPECT_EQ(Walk(t, V4(143, listed)).reach, Reach::kReaches) << listed;
  for (const char* other : {"10.2.0.1", "203.0.113.7"}) {
    Verdict v = Walk(t, V4(143, other));
    EXPECT_EQ(v.reach, Reach::kBlocked) << other;
    EXPECT_EQ(v.decided_by->rule, "tcp dport 143 ct state new drop");
  }
  EXPECT_EQ(Walk(t, V4(143)).reach, Reach::kBlocked);  // an ordinary source
  PortClaim claim{143, "imap", false, {{"big", big.entries}}};
  EXPECT_TRUE(Judge(t, Host(), {claim}).violations.empty());
}

}  // namespace
}  // namespace mw::analysis

namespace mw::analysis {
namespace {

TEST(Reach, LoopsInHandMadeInputEndInAVerdict) {
  // iptables-restore refuses a loop, a hand-edited file may hold one: a verdict, not a hang.
  Topology t = Ipt("*filter\n:INPUT ACCEPT [0:0]\n:L - [0:0]\n-A INPUT -j L\n"
                   "-A L -p tcp -m limit --limit 1/s -j L\n-A L -p tcp --dport 143 -j L\nCOMMIT\n");
  Verdict v = Walk(t, V4(143));
  EXPECT_EQ(v.reach, Reach::kMaybeBlocked);
  EXPECT_LE(v.path.size(), 256u);
}

}  // namespace
}  // namespace mw::analysis

namespace mw::analysis {
namespace {

TEST(NftText, MailwardsOwnRulesReadBackInNftSyntax) {
  // Plans show deletions in nft syntax: every rule the codec builds renders as its description.
  Policy p;
  for (auto [name, port, state, action] : {std::tuple{"imap", 143, PortState::kClosed, Action::kDrop},
                                           std::tuple{"pop3", 110, PortState::kClosed, Action::kReject},
                                           std::tuple{"imaps", 993, PortState::kOpen, Action::kDrop}}) {
    PortPolicy pp;
    pp.name = name;
    pp.port = static_cast<uint16_t>(port);
    pp.state = state;
    pp.action = action;
    if (port == 143) pp.allow = {"office"};
    if (port == 993) pp.rate_limit = RateLimit{20, 60, 5, "20/minute"};
    p.ports.push_back(pp);
  }
  Allowlist office;
  office.name = "office";
  office.entries = {C("198.51.100.3"), C("2001:db8::/48")};
  p.allowlists["office"] = office;
  Ruleset rs = BuildRuleset(p);
  ASSERT_GT(rs.rules.size(), 6u);
  for (const auto& r : rs.rules) {
    std::string text = NftRuleText(nft::BuildRule(r).get());
    EXPECT_EQ(text, r.Describe()) << r.key;
  }
}

}  // namespace
}  // namespace mw::analysis

namespace mw::analysis {
namespace {

TEST(Reach, EveryBlockerOnThePathIsReportedAcrossTables) {
  // iptables' INPUT policy drop and another tool's nftables table both block 993: each owner is
  // told (fixing one must not reveal the other only later).
  Topology t = Ipt("*filter\n:INPUT DROP [0:0]\nCOMMIT\n");
  RuleSpec drop;
  drop.key = "x";
  drop.port = 993;
  drop.verdict = mw::Verdict::kDrop;
  auto rule = nft::BuildRule(drop);
  NftChainIn chain;
  chain.family = NFPROTO_INET;
  chain.table = "fw";
  chain.name = "input";
  chain.base = true;
  chain.hook = NF_INET_LOCAL_IN;
  chain.rules.push_back(rule.get());
  AddNftTables({chain}, std::make_shared<Sets>(), &t);
  PortClaim imaps{993, "imaps", true, {}};
  Judgement j = Judge(t, Host(), {imaps});
  std::set<std::string> where;
  for (const auto& v : j.violations) where.insert(v.where);
  EXPECT_EQ(where, (std::set<std::string>{"iptables filter chain INPUT", "table inet fw chain input"}));
  // The same on a host with no interface but loopback (a flow to "some local address").
  Cidr l = C("127.0.0.1");
  l.prefix = 8;
  Judgement jl = Judge(t, {Interface{"lo", {l}, true, false}}, {imaps});
  std::set<std::string> wl;
  for (const auto& v : jl.violations)
    if (v.family == Family::kV4) wl.insert(v.where);
  EXPECT_EQ(wl, (std::set<std::string>{"iptables filter chain INPUT", "table inet fw chain input"}));
}

}  // namespace
}  // namespace mw::analysis
