// nftables rules other firewalls write, built with libnftnl expression by expression (as the
// kernel returns them), read back in nft syntax and walked by the reachability engine.
#include <arpa/inet.h>
#include <cstdio>
#include <linux/if_packet.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>

#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "analysis/nft_eval.h"
#include "analysis/reach.h"

namespace mw::analysis {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes Be16(uint16_t v) { return {static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v & 255)}; }
Bytes U32(uint32_t v) {
  Bytes b(4);
  std::memcpy(b.data(), &v, 4);
  return b;
}
Bytes Ip4(const char* s) {
  Bytes b(4);
  inet_pton(AF_INET, s, b.data());
  return b;
}
Bytes Ip6(const char* s) {
  Bytes b(16);
  inet_pton(AF_INET6, s, b.data());
  return b;
}
Bytes Name(const std::string& s, size_t len = 16) {
  Bytes b(len, 0);
  std::memcpy(b.data(), s.data(), std::min(s.size(), len));
  return b;
}

/// One rule, expression by expression.
class R {
 public:
  explicit R(uint32_t family = NFPROTO_INET) : r_(nftnl_rule_alloc()) { nftnl_rule_set_u32(r_, NFTNL_RULE_FAMILY, family); }
  R(R&& o) noexcept : r_(o.r_) { o.r_ = nullptr; }
  ~R() {
    if (r_) nftnl_rule_free(r_);
  }
  const nftnl_rule* get() const { return r_; }
  std::string Text() const { return NftRuleText(r_); }

  R& Meta(uint32_t key, uint32_t dreg = NFT_REG_1) {
    auto* e = New("meta");
    nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, key);
    nftnl_expr_set_u32(e, NFTNL_EXPR_META_DREG, dreg);
    return Add(e);
  }
  R& MetaSet(uint32_t key, uint32_t sreg = NFT_REG_1) {
    auto* e = New("meta");
    nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, key);
    nftnl_expr_set_u32(e, NFTNL_EXPR_META_SREG, sreg);
    return Add(e);
  }
  R& Payload(uint32_t base, uint32_t off, uint32_t len, uint32_t dreg = NFT_REG_1) {
    auto* e = New("payload");
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, base);
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, off);
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, len);
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, dreg);
    return Add(e);
  }
  R& PayloadSet(uint32_t base, uint32_t off, uint32_t len, uint32_t sreg) {
    auto* e = New("payload");
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, base);
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, off);
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, len);
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_SREG, sreg);
    return Add(e);
  }
  R& Tcp() { return Meta(NFT_META_L4PROTO).Cmp(NFT_CMP_EQ, {IPPROTO_TCP}); }
  R& Dport() { return Payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2); }
  R& Saddr4() { return Payload(NFT_PAYLOAD_NETWORK_HEADER, 12, 4); }
  R& Cmp(uint32_t op, const Bytes& data, uint32_t sreg = NFT_REG_1) {
    auto* e = New("cmp");
    nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, sreg);
    nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, op);
    nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, data.data(), data.size());
    return Add(e);
  }
  R& Range(uint32_t op, const Bytes& from, const Bytes& to, uint32_t sreg = NFT_REG_1) {
    auto* e = New("range");
    nftnl_expr_set_u32(e, NFTNL_EXPR_RANGE_SREG, sreg);
    nftnl_expr_set_u32(e, NFTNL_EXPR_RANGE_OP, op);
    nftnl_expr_set(e, NFTNL_EXPR_RANGE_FROM_DATA, from.data(), from.size());
    nftnl_expr_set(e, NFTNL_EXPR_RANGE_TO_DATA, to.data(), to.size());
    return Add(e);
  }
  R& Bitwise(const Bytes& mask, const Bytes& x, uint32_t sreg = NFT_REG_1, uint32_t dreg = NFT_REG_1) {
    auto* e = New("bitwise");
    nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_SREG, sreg);
    nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_DREG, dreg);
    nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_LEN, static_cast<uint32_t>(mask.size()));
    nftnl_expr_set(e, NFTNL_EXPR_BITWISE_MASK, mask.data(), mask.size());
    nftnl_expr_set(e, NFTNL_EXPR_BITWISE_XOR, x.data(), x.size());
    return Add(e);
  }
  R& Shift(uint32_t len, uint32_t sreg = NFT_REG_1, uint32_t dreg = NFT_REG_1) {
    auto* e = New("bitwise");
    nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_SREG, sreg);
    nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_DREG, dreg);
    nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_LEN, len);
    nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_OP, NFT_BITWISE_LSHIFT);
    return Add(e);
  }
  R& Byteorder(uint32_t len, uint32_t size, uint32_t sreg = NFT_REG_1, uint32_t dreg = NFT_REG_1) {
    auto* e = New("byteorder");
    nftnl_expr_set_u32(e, NFTNL_EXPR_BYTEORDER_SREG, sreg);
    nftnl_expr_set_u32(e, NFTNL_EXPR_BYTEORDER_DREG, dreg);
    nftnl_expr_set_u32(e, NFTNL_EXPR_BYTEORDER_OP, NFT_BYTEORDER_NTOH);
    nftnl_expr_set_u32(e, NFTNL_EXPR_BYTEORDER_LEN, len);
    nftnl_expr_set_u32(e, NFTNL_EXPR_BYTEORDER_SIZE, size);
    return Add(e);
  }
  R& Ct(uint32_t key, uint32_t dreg = NFT_REG_1, std::optional<uint8_t> dir = std::nullopt) {
    auto* e = New("ct");
    nftnl_expr_set_u32(e, NFTNL_EXPR_CT_KEY, key);
    nftnl_expr_set_u32(e, NFTNL_EXPR_CT_DREG, dreg);
    if (dir) nftnl_expr_set_u8(e, NFTNL_EXPR_CT_DIR, *dir);
    return Add(e);
  }
  R& CtSet(uint32_t key, uint32_t sreg = NFT_REG_1) {
    auto* e = New("ct");
    nftnl_expr_set_u32(e, NFTNL_EXPR_CT_KEY, key);
    nftnl_expr_set_u32(e, NFTNL_EXPR_CT_SREG, sreg);
    return Add(e);
  }
  /// `ct state a,b`: the state loaded, masked, compared with zero.
  R& CtState(uint32_t bits) { return Ct(NFT_CT_STATE).Bitwise(U32(bits), U32(0)).Cmp(NFT_CMP_NEQ, U32(0)); }
  R& Fib(uint32_t flags, uint32_t result, uint32_t dreg = NFT_REG_1) {
    auto* e = New("fib");
    nftnl_expr_set_u32(e, NFTNL_EXPR_FIB_FLAGS, flags);
    nftnl_expr_set_u32(e, NFTNL_EXPR_FIB_RESULT, result);
    nftnl_expr_set_u32(e, NFTNL_EXPR_FIB_DREG, dreg);
    return Add(e);
  }
  R& Lookup(const char* set, uint32_t sreg = NFT_REG_1, std::optional<uint32_t> dreg = std::nullopt, bool inv = false) {
    auto* e = New("lookup");
    nftnl_expr_set_str(e, NFTNL_EXPR_LOOKUP_SET, set);
    nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SREG, sreg);
    if (dreg) nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_DREG, *dreg);
    if (inv) nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
    return Add(e);
  }
  R& Imm(const Bytes& data, uint32_t dreg) {
    auto* e = New("immediate");
    nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, dreg);
    nftnl_expr_set(e, NFTNL_EXPR_IMM_DATA, data.data(), data.size());
    return Add(e);
  }
  R& Verdict(int32_t v, const char* chain = nullptr) {
    auto* e = New("immediate");
    nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
    nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_VERDICT, static_cast<uint32_t>(v));
    if (chain) nftnl_expr_set_str(e, NFTNL_EXPR_IMM_CHAIN, chain);
    return Add(e);
  }
  R& Accept() { return Verdict(NF_ACCEPT); }
  R& Drop() { return Verdict(NF_DROP); }
  R& Reject(uint32_t type) {
    auto* e = New("reject");
    nftnl_expr_set_u32(e, NFTNL_EXPR_REJECT_TYPE, type);
    return Add(e);
  }
  R& Nat(uint32_t type, uint32_t family, std::optional<uint32_t> addr_reg, std::optional<uint32_t> proto_reg) {
    auto* e = New("nat");
    nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_TYPE, type);
    nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_FAMILY, family);
    if (addr_reg) nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_REG_ADDR_MIN, *addr_reg);
    if (proto_reg) nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_REG_PROTO_MIN, *proto_reg);
    return Add(e);
  }
  R& Redir(std::optional<uint32_t> proto_reg) {
    auto* e = New("redir");
    if (proto_reg) nftnl_expr_set_u32(e, NFTNL_EXPR_REDIR_REG_PROTO_MIN, *proto_reg);
    return Add(e);
  }
  R& Limit(uint64_t rate, uint64_t unit, bool over) {
    return Add(LimitExpr(rate, unit, over, 0));
  }
  static nftnl_expr* LimitExpr(uint64_t rate, uint64_t unit, bool over, uint32_t burst) {
    auto* e = nftnl_expr_alloc("limit");
    nftnl_expr_set_u64(e, NFTNL_EXPR_LIMIT_RATE, rate);
    nftnl_expr_set_u64(e, NFTNL_EXPR_LIMIT_UNIT, unit);
    nftnl_expr_set_u32(e, NFTNL_EXPR_LIMIT_BURST, burst);
    nftnl_expr_set_u32(e, NFTNL_EXPR_LIMIT_TYPE, NFT_LIMIT_PKTS);
    if (over) nftnl_expr_set_u32(e, NFTNL_EXPR_LIMIT_FLAGS, NFT_LIMIT_F_INV);
    return e;
  }
  R& Dynset(const char* set, uint32_t sreg, nftnl_expr* inner) {
    auto* e = New("dynset");
    nftnl_expr_set_str(e, NFTNL_EXPR_DYNSET_SET_NAME, set);
    nftnl_expr_set_u32(e, NFTNL_EXPR_DYNSET_SREG_KEY, sreg);
    nftnl_expr_set_u32(e, NFTNL_EXPR_DYNSET_OP, NFT_DYNSET_OP_UPDATE);
    if (inner) nftnl_expr_set(e, NFTNL_EXPR_DYNSET_EXPR, inner, 0);
    return Add(e);
  }
  R& Log(const char* prefix, uint16_t group) {
    auto* e = New("log");
    nftnl_expr_set_str(e, NFTNL_EXPR_LOG_PREFIX, prefix);
    nftnl_expr_set_u16(e, NFTNL_EXPR_LOG_GROUP, group);
    return Add(e);
  }
  R& Named(const char* name) { return Add(New(name)); }
  R& Counter() { return Named("counter"); }
  R& U32Attr(const char* name, std::vector<std::pair<uint16_t, uint32_t>> attrs) {
    auto* e = New(name);
    for (auto [a, v] : attrs) nftnl_expr_set_u32(e, a, v);
    return Add(e);
  }
  R& Str(const char* name, uint16_t attr, const char* v) {
    auto* e = New(name);
    nftnl_expr_set_str(e, attr, v);
    return Add(e);
  }
  R& Quota(uint64_t bytes, bool over) {
    auto* e = New("quota");
    nftnl_expr_set_u64(e, NFTNL_EXPR_QUOTA_BYTES, bytes);
    if (over) nftnl_expr_set_u32(e, NFTNL_EXPR_QUOTA_FLAGS, NFT_QUOTA_F_INV);
    return Add(e);
  }
  R& Exthdr(uint32_t op, uint8_t type, uint32_t off, uint32_t len, bool present, uint32_t dreg = NFT_REG_1) {
    auto* e = New("exthdr");
    nftnl_expr_set_u32(e, NFTNL_EXPR_EXTHDR_OP, op);
    nftnl_expr_set_u8(e, NFTNL_EXPR_EXTHDR_TYPE, type);
    nftnl_expr_set_u32(e, NFTNL_EXPR_EXTHDR_OFFSET, off);
    nftnl_expr_set_u32(e, NFTNL_EXPR_EXTHDR_LEN, len);
    nftnl_expr_set_u32(e, NFTNL_EXPR_EXTHDR_DREG, dreg);
    if (present) nftnl_expr_set_u32(e, NFTNL_EXPR_EXTHDR_FLAGS, NFT_EXTHDR_F_PRESENT);
    return Add(e);
  }

 private:
  static nftnl_expr* New(const char* name) { return nftnl_expr_alloc(name); }
  R& Add(nftnl_expr* e) {
    nftnl_rule_add_expr(r_, e);
    return *this;
  }
  nftnl_rule* r_;
};

/// Sets by name: key length and members (maps: member -> data or verdict).
class Sets : public NftSets {
 public:
  struct Elem {
    Bytes key;
    Bytes data;
    std::optional<int32_t> verdict;
    std::string chain;
  };
  std::map<std::string, std::pair<uint32_t, std::vector<Elem>>> sets;
  std::set<std::string> unreadable;
  uint32_t KeyLen(uint32_t, const std::string&, const std::string& set) override {
    auto it = sets.find(set);
    return it == sets.end() ? 0 : it->second.first;
  }
  std::optional<SetHit> Lookup(uint32_t, const std::string&, const std::string& set, const Bytes& key) override {
    if (unreadable.count(set)) return std::nullopt;
    SetHit h;
    for (const auto& e : sets[set].second)
      if (e.key == key) {
        h.found = true;
        h.data = e.data;
        h.verdict = e.verdict;
        h.chain = e.chain;
      }
    return h;
  }
};

Cidr C(const char* s, int prefix) {
  Cidr c;
  std::string err;
  EXPECT_TRUE(ParseCidr(s, &c, &err)) << s;
  c.prefix = prefix;
  return c;
}

std::vector<Interface> Host() {
  return {Interface{"lo", {C("127.0.0.1", 8)}, true, false}, Interface{"eth0", {C("198.51.100.1", 24), C("2001:db8::1", 64)}, false, false},
          Interface{"docker0", {C("172.17.0.1", 16)}, false, true}};
}

Flow F(uint16_t port, const char* from = nullptr, Family fam = Family::kV4) {
  Flow f;
  f.family = fam;
  f.dport = port;
  f.interfaces = Host();
  f.daddr = C(fam == Family::kV4 ? "198.51.100.1" : "2001:db8::1", 128).addr;
  if (from) f.saddr = C(from, 128).addr;
  return f;
}

/// A table `inet t` with the base chain `input` (policy accept) holding `rules`, plus `others`.
struct Fw {
  std::vector<R> owned;
  std::vector<NftChainIn> chains;
  std::shared_ptr<Sets> sets = std::make_shared<Sets>();
  Topology topo;
  NftChainIn& Chain(const std::string& name, bool base = false, uint32_t hook = NF_INET_LOCAL_IN, const char* type = "filter",
                    int32_t prio = 0) {
    NftChainIn c;
    c.family = NFPROTO_INET;
    c.table = "t";
    c.name = name;
    c.base = base;
    c.hook = hook;
    c.type = type;
    c.priority = prio;
    chains.push_back(c);
    return chains.back();
  }
  Verdict Walk(const Flow& f) {
    // Rebuilt per walk: `owned` may have moved while rules were added.
    for (auto& c : chains) c.rules.clear();
    for (size_t i = 0; i < owned.size(); ++i) chains[where[i]].rules.push_back(owned[i].get());
    topo = Topology{};
    AddNftTables(chains, sets, &topo);
    return analysis::Walk(topo, f);
  }
  void Rule(const std::string& chain, R&& r) {
    for (size_t i = 0; i < chains.size(); ++i)
      if (chains[i].name == chain) where.push_back(i);
    owned.push_back(std::move(r));
  }
  std::vector<size_t> where;
};

/// One input chain with `r` alone: the verdict for `f`.
Verdict One(R&& r, const Flow& f, const std::function<void(Sets&)>& fill = nullptr) {
  Fw fw;
  fw.Chain("input", true);
  if (fill) fill(*fw.sets);
  fw.Rule("input", std::move(r));
  return fw.Walk(f);
}

TEST(NftRules, InterfaceNamesExactAndWildcard) {
  R lo;
  lo.Meta(NFT_META_IIFNAME).Cmp(NFT_CMP_EQ, Name("lo")).Drop();
  EXPECT_EQ(lo.Text(), "iifname \"lo\" drop");
  // Some non-loopback interface: never "lo".
  EXPECT_EQ(One(std::move(lo), F(143)).reach, Reach::kReaches);

  R eth;
  eth.Meta(NFT_META_IIFNAME).Cmp(NFT_CMP_EQ, Name("eth", 3)).Drop();
  EXPECT_EQ(eth.Text(), "iifname \"eth*\" drop");
  Flow on_eth0 = F(143);
  on_eth0.iif = "eth0";
  Flow on_wg0 = F(143);
  on_wg0.iif = "wg0";
  Fw fw;
  fw.Chain("input", true);
  fw.Rule("input", std::move(eth));
  EXPECT_EQ(fw.Walk(on_eth0).reach, Reach::kBlocked);
  EXPECT_EQ(fw.Walk(on_wg0).reach, Reach::kReaches);
  EXPECT_EQ(fw.Walk(F(143)).reach, Reach::kMaybeBlocked);  // which interface is unknown

  R iif;
  iif.Meta(NFT_META_IIF).Cmp(NFT_CMP_NEQ, U32(1)).Accept();
  EXPECT_EQ(iif.Text(), "iif != 0x00000001 accept");
}

TEST(NftRules, AddressPrefixesDecideForTheSourceAndRestrictOrdinarySources) {
  auto rule = [] {
    R r;
    r.Meta(NFT_META_NFPROTO).Cmp(NFT_CMP_EQ, {NFPROTO_IPV4}).Saddr4().Bitwise({255, 255, 255, 0}, {0, 0, 0, 0})
        .Cmp(NFT_CMP_EQ, Ip4("203.0.113.0")).Tcp().Dport().Cmp(NFT_CMP_EQ, Be16(143)).Drop();
    return r;
  };
  EXPECT_EQ(rule().Text(), "ip saddr 203.0.113.0/24 tcp dport 143 drop");
  EXPECT_EQ(One(rule(), F(143, "203.0.113.9")).reach, Reach::kBlocked);
  EXPECT_EQ(One(rule(), F(143, "198.51.100.9")).reach, Reach::kReaches);
  EXPECT_EQ(One(rule(), F(993, "203.0.113.9")).reach, Reach::kReaches);
  Verdict ordinary = One(rule(), F(143));
  EXPECT_EQ(ordinary.reach, Reach::kReaches);
  ASSERT_EQ(ordinary.restrictions.size(), 1u);
  EXPECT_EQ(ordinary.restrictions[0].rule, "ip saddr 203.0.113.0/24 tcp dport 143 drop");
  EXPECT_EQ(ordinary.restrictions[0].table, "table inet t");

  // An IPv6 rule in an inet table does not apply to IPv4 flows.
  auto v6 = [] {
    R r;
    r.Meta(NFT_META_NFPROTO).Cmp(NFT_CMP_EQ, {NFPROTO_IPV6}).Payload(NFT_PAYLOAD_NETWORK_HEADER, 8, 4)
        .Cmp(NFT_CMP_EQ, {0x20, 0x01, 0x0d, 0xb8}).Drop();
    return r;
  };
  EXPECT_EQ(v6().Text(), "ip6 saddr 2001:db8::/32 drop");
  EXPECT_EQ(One(v6(), F(143, "203.0.113.9")).reach, Reach::kReaches);
  EXPECT_EQ(One(v6(), F(143, "2001:db8:5::9", Family::kV6)).reach, Reach::kBlocked);
  EXPECT_EQ(One(v6(), F(143, "2001:db9::9", Family::kV6)).reach, Reach::kReaches);

  R daddr(NFPROTO_IPV4);
  daddr.Payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4).Cmp(NFT_CMP_EQ, Ip4("198.51.100.1")).Payload(NFT_PAYLOAD_NETWORK_HEADER, 9, 1)
      .Cmp(NFT_CMP_EQ, {IPPROTO_TCP}).Payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2).Cmp(NFT_CMP_NEQ, Be16(22)).Reject(NFT_REJECT_TCP_RST);
  EXPECT_EQ(daddr.Text(), "ip daddr 198.51.100.1 ip protocol tcp tcp dport != 22 reject with tcp reset");
  EXPECT_EQ(One(std::move(daddr), F(143)).reach, Reach::kBlocked);
}

TEST(NftRules, PortRangesAndComparisons) {
  auto range = [](uint32_t op) {
    R r;
    r.Tcp().Dport().Range(op, Be16(100), Be16(200)).Drop();
    return r;
  };
  EXPECT_EQ(range(NFT_RANGE_EQ).Text(), "tcp dport 100-200 drop");
  EXPECT_EQ(range(NFT_RANGE_NEQ).Text(), "tcp dport != 100-200 drop");
  EXPECT_EQ(One(range(NFT_RANGE_EQ), F(143)).reach, Reach::kBlocked);
  EXPECT_EQ(One(range(NFT_RANGE_EQ), F(993)).reach, Reach::kReaches);
  EXPECT_EQ(One(range(NFT_RANGE_NEQ), F(993)).reach, Reach::kBlocked);

  auto between = [] {
    R r;
    r.Tcp().Dport().Cmp(NFT_CMP_GTE, Be16(990)).Cmp(NFT_CMP_LTE, Be16(995)).Drop();
    return r;
  };
  EXPECT_EQ(between().Text(), "tcp dport 990-995 drop");
  EXPECT_EQ(One(between(), F(993)).reach, Reach::kBlocked);
  EXPECT_EQ(One(between(), F(143)).reach, Reach::kReaches);
  for (auto [op, word, blocks143] : {std::tuple{NFT_CMP_LT, "< ", true}, std::tuple{NFT_CMP_GT, "> ", false}}) {
    R r;
    r.Tcp().Dport().Cmp(op, Be16(500)).Drop();
    EXPECT_EQ(r.Text(), std::string("tcp dport ") + word + "500 drop");
    EXPECT_EQ(One(std::move(r), F(143)).reach, blocks143 ? Reach::kBlocked : Reach::kReaches) << word;
  }
  // A source-port range on the ordinary source: undecidable bytes, a maybe.
  R sport;
  sport.Tcp().Payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 2).Range(NFT_RANGE_EQ, Be16(0), Be16(1023)).Drop();
  EXPECT_EQ(sport.Text(), "tcp sport 0-1023 drop");
  EXPECT_EQ(One(std::move(sport), F(143)).reach, Reach::kMaybeBlocked);
}

TEST(NftRules, ConntrackStateStatusAndMarks) {
  auto state = [](uint32_t bits) {
    R r;
    r.CtState(bits).Drop();
    return r;
  };
  uint32_t est_rel = NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED);
  EXPECT_EQ(state(est_rel).Text(), "ct state established,related drop");
  EXPECT_EQ(state(NF_CT_STATE_INVALID_BIT).Text(), "ct state invalid drop");
  EXPECT_EQ(One(state(est_rel), F(143)).reach, Reach::kReaches);  // a new connection
  EXPECT_EQ(One(state(NF_CT_STATE_BIT(IP_CT_NEW)), F(143)).reach, Reach::kBlocked);

  R status;
  status.Ct(NFT_CT_STATUS).Bitwise(U32(IPS_DST_NAT), U32(0)).Cmp(NFT_CMP_NEQ, U32(0)).Drop();
  EXPECT_EQ(status.Text(), "ct status dnat drop");
  EXPECT_EQ(One(std::move(status), F(143)).reach, Reach::kReaches);  // not DNATed

  R dir;
  dir.Ct(NFT_CT_PROTO_DST, NFT_REG_1, 0).Cmp(NFT_CMP_EQ, Be16(143)).Ct(NFT_CT_DIRECTION).Cmp(NFT_CMP_EQ, {0}).Drop();
  EXPECT_EQ(dir.Text(), "ct original proto-dst 143 ct direction 0x00 drop");
  EXPECT_EQ(One(std::move(dir), F(143)).reach, Reach::kBlocked);

  R reply;
  reply.Ct(NFT_CT_PROTO_DST, NFT_REG_1, 1).Cmp(NFT_CMP_EQ, Be16(143)).Drop();
  EXPECT_EQ(reply.Text(), "ct reply proto-dst 143 drop");
  EXPECT_EQ(One(std::move(reply), F(143)).reach, Reach::kMaybeBlocked);

  R src;
  src.Ct(NFT_CT_SRC_IP).Cmp(NFT_CMP_EQ, Ip4("203.0.113.9")).Ct(NFT_CT_L3PROTOCOL, NFT_REG_2).Cmp(NFT_CMP_EQ, {NFPROTO_IPV4}, NFT_REG_2)
      .Ct(NFT_CT_PROTOCOL, NFT_REG_3).Cmp(NFT_CMP_EQ, {IPPROTO_TCP}, NFT_REG_3).Drop();
  EXPECT_EQ(src.Text().rfind("ct ip saddr 203.0.113.9", 0), 0u) << src.Text();
  Fw fw;
  fw.Chain("input", true);
  fw.Rule("input", std::move(src));
  EXPECT_EQ(fw.Walk(F(143, "203.0.113.9")).reach, Reach::kBlocked);
  EXPECT_EQ(fw.Walk(F(143, "203.0.113.10")).reach, Reach::kReaches);
  EXPECT_EQ(fw.Walk(F(143)).restrictions.size(), 1u);

  R dst;
  dst.Ct(NFT_CT_DST_IP).Cmp(NFT_CMP_EQ, Ip4("198.51.100.1")).Drop();
  EXPECT_EQ(dst.Text(), "ct ip daddr 198.51.100.1 drop");
  EXPECT_EQ(One(std::move(dst), F(143)).reach, Reach::kBlocked);
}

TEST(NftRules, MarksSetByOneRuleAreSeenByTheNext) {
  Fw fw;
  fw.Chain("input", true);
  R set;
  set.Tcp().Dport().Cmp(NFT_CMP_EQ, Be16(143)).Imm(U32(5), NFT_REG_1).MetaSet(NFT_META_MARK);
  EXPECT_EQ(set.Text(), "tcp dport 143 meta mark set 0x00000005");
  R ctset;
  ctset.Imm(U32(7), NFT_REG_1).CtSet(NFT_CT_MARK);
  EXPECT_EQ(ctset.Text(), "ct mark set 0x00000007");
  R drop;
  drop.Meta(NFT_META_MARK).Cmp(NFT_CMP_EQ, U32(5)).Ct(NFT_CT_MARK, NFT_REG_2).Cmp(NFT_CMP_EQ, U32(7), NFT_REG_2).Drop();
  EXPECT_EQ(drop.Text(), "meta mark 0x00000005 ct mark 0x00000007 drop");
  fw.Rule("input", std::move(set));
  fw.Rule("input", std::move(ctset));
  fw.Rule("input", std::move(drop));
  Verdict v = fw.Walk(F(143));
  EXPECT_EQ(v.reach, Reach::kBlocked);
  EXPECT_EQ(v.decided_by->rule, "meta mark 0x00000005 ct mark 0x00000007 drop");
  EXPECT_EQ(fw.Walk(F(993)).reach, Reach::kReaches);  // the mark was not set

  // A mark copied from an unknown register: whatever compares it later cannot be decided.
  Fw unknown;
  unknown.Chain("input", true);
  R copy;
  copy.Meta(NFT_META_IIF).MetaSet(NFT_META_MARK);
  R test;
  test.Meta(NFT_META_MARK).Cmp(NFT_CMP_EQ, U32(5)).Drop();
  unknown.Rule("input", std::move(copy));
  unknown.Rule("input", std::move(test));
  EXPECT_EQ(unknown.Walk(F(143)).reach, Reach::kMaybeBlocked);
}

TEST(NftRules, FibAntiSpoofingAndAddressTypes) {
  auto spoof = [] {
    R r;
    r.Fib(NFTA_FIB_F_SADDR, NFT_FIB_RESULT_ADDRTYPE).Cmp(NFT_CMP_EQ, U32(RTN_LOCAL)).Drop();
    return r;
  };
  EXPECT_EQ(spoof().Text(), "fib saddr type local drop");
  EXPECT_EQ(One(spoof(), F(143, "127.0.0.9")).reach, Reach::kBlocked);
  EXPECT_EQ(One(spoof(), F(143, "203.0.113.9")).reach, Reach::kReaches);

  R local;
  local.Fib(NFTA_FIB_F_DADDR, NFT_FIB_RESULT_ADDRTYPE).Cmp(NFT_CMP_NEQ, U32(RTN_LOCAL)).Drop();
  EXPECT_EQ(local.Text(), "fib daddr type != local drop");
  EXPECT_EQ(One(std::move(local), F(143)).reach, Reach::kReaches);

  R rpf;
  rpf.Fib(NFTA_FIB_F_SADDR | NFTA_FIB_F_IIF | NFTA_FIB_F_PRESENT, NFT_FIB_RESULT_OIF).Cmp(NFT_CMP_EQ, {0}).Drop();
  EXPECT_EQ(rpf.Text(), "fib saddr . iif oif missing drop");
  EXPECT_EQ(One(std::move(rpf), F(143)).reach, Reach::kReaches);  // an ordinary source has a route back

  R oif;
  oif.Fib(NFTA_FIB_F_SADDR | NFTA_FIB_F_MARK | NFTA_FIB_F_IIF, NFT_FIB_RESULT_OIF).Cmp(NFT_CMP_EQ, U32(0)).Drop();
  EXPECT_EQ(oif.Text(), "fib saddr . mark . iif oif 0x00000000 drop");
  EXPECT_EQ(One(std::move(oif), F(143)).reach, Reach::kReaches);  // a reverse route: non-zero

  R name;
  name.Fib(NFTA_FIB_F_DADDR | NFTA_FIB_F_OIF, NFT_FIB_RESULT_OIFNAME).Cmp(NFT_CMP_EQ, Name("eth0")).Drop();
  EXPECT_EQ(name.Text(), "fib daddr . oif oifname \"eth0\" drop");
  EXPECT_EQ(One(std::move(name), F(143)).reach, Reach::kMaybeBlocked);
}

TEST(NftRules, SetsMapsAndVerdictMaps) {
  auto banned = [](bool inv) {
    R r;
    r.Saddr4().Lookup("banned", NFT_REG_1, std::nullopt, inv).Drop();
    return r;
  };
  auto fill = [](Sets& s) {
    s.sets["banned"] = {4, {{Ip4("203.0.113.9"), {}, std::nullopt, ""}}};
    s.sets["ports"] = {2, {{Be16(143), {}, NF_DROP, ""}, {Be16(993), {}, NFT_JUMP, "imaps"}}};
  };
  EXPECT_EQ(banned(false).Text(), "ip saddr @banned drop");
  EXPECT_EQ(banned(true).Text(), "ip saddr != @banned drop");
  EXPECT_EQ(One(banned(false), F(143, "203.0.113.9"), fill).reach, Reach::kBlocked);
  EXPECT_EQ(One(banned(false), F(143, "203.0.113.8"), fill).reach, Reach::kReaches);
  EXPECT_EQ(One(banned(true), F(143, "203.0.113.8"), fill).reach, Reach::kBlocked);
  Verdict ordinary = One(banned(false), F(143), fill);
  EXPECT_EQ(ordinary.reach, Reach::kReaches);
  EXPECT_EQ(ordinary.restrictions.size(), 1u);  // a ban list restricts some sources only
  // A set that cannot be read: undecided.
  EXPECT_EQ(One(banned(false), F(143, "203.0.113.9"), [&](Sets& s) { fill(s); s.unreadable.insert("banned"); }).reach,
            Reach::kMaybeBlocked);
  // A set that does not exist (key length 0): undecided.
  EXPECT_EQ(One(banned(false), F(143, "203.0.113.9")).reach, Reach::kMaybeBlocked);

  Fw fw;
  fw.Chain("input", true);
  fw.Chain("imaps");
  fill(*fw.sets);
  R vmap;
  vmap.Tcp().Dport().Lookup("ports", NFT_REG_1, NFT_REG_VERDICT);
  EXPECT_EQ(vmap.Text(), "tcp dport vmap @ports");
  R reject;
  reject.Reject(NFT_REJECT_ICMP_UNREACH);
  EXPECT_EQ(reject.Text(), "reject");
  fw.Rule("input", std::move(vmap));
  fw.Rule("imaps", std::move(reject));
  Verdict v143 = fw.Walk(F(143));
  EXPECT_EQ(v143.reach, Reach::kBlocked);
  EXPECT_EQ(v143.decided_by->rule, "tcp dport vmap @ports");
  Verdict v993 = fw.Walk(F(993));
  EXPECT_EQ(v993.reach, Reach::kBlocked);
  EXPECT_EQ(v993.decided_by->chain, "imaps");
  EXPECT_EQ(fw.Walk(F(110)).reach, Reach::kReaches);  // no element: no verdict

  // A data map: the value it loads is compared afterwards.
  auto map = [] {
    R r;
    r.Tcp().Dport().Lookup("marks", NFT_REG_1, NFT_REG_2).Cmp(NFT_CMP_EQ, U32(1), NFT_REG_2).Drop();
    return r;
  };
  auto marks = [](Sets& s) { s.sets["marks"] = {2, {{Be16(143), U32(1), std::nullopt, ""}, {Be16(993), U32(2), std::nullopt, ""}}}; };
  // The map's data type is not known here: its bytes in memory order.
  EXPECT_EQ(map().Text(), "tcp dport map @marks 0x01000000 drop");
  EXPECT_EQ(One(map(), F(143), marks).reach, Reach::kBlocked);
  EXPECT_EQ(One(map(), F(993), marks).reach, Reach::kReaches);
  EXPECT_EQ(One(map(), F(110), marks).reach, Reach::kReaches);  // no element: the kernel breaks
  EXPECT_EQ(One(map(), F(143)).reach, Reach::kMaybeBlocked);    // no such map
}

TEST(NftRules, NatRedirectAndMasquerade) {
  Fw fw;
  fw.Chain("prerouting", true, NF_INET_PRE_ROUTING, "nat", -100);
  R dnat;
  dnat.Tcp().Dport().Cmp(NFT_CMP_EQ, Be16(143)).Imm(Ip4("172.17.0.2"), NFT_REG_1).Imm(Be16(8143), NFT_REG_2)
      .Nat(NFT_NAT_DNAT, NFPROTO_IPV4, NFT_REG_1, NFT_REG_2);
  EXPECT_EQ(dnat.Text(), "tcp dport 143 dnat to 172.17.0.2:8143");
  R redir;
  redir.Tcp().Dport().Cmp(NFT_CMP_EQ, Be16(110)).Imm(Be16(10110), NFT_REG_1).Redir(NFT_REG_1);
  EXPECT_EQ(redir.Text(), "tcp dport 110 redirect");
  fw.Rule("prerouting", std::move(dnat));
  fw.Rule("prerouting", std::move(redir));
  Verdict v = fw.Walk(F(143));
  EXPECT_EQ(v.reach, Reach::kReaches);
  EXPECT_EQ(v.destination, "172.17.0.2:8143");
  Verdict r = fw.Walk(F(110));
  EXPECT_EQ(r.destination, "127.0.0.1:10110");
  EXPECT_EQ(fw.Walk(F(993)).destination, "this host");

  // A DNAT address taken from an unknown register: it may go anywhere.
  R unknown;
  unknown.Meta(NFT_META_IIF).Nat(NFT_NAT_DNAT, NFPROTO_IPV4, NFT_REG_1, std::nullopt);
  EXPECT_EQ(unknown.Text(), "dnat to iif");
  R masq;
  masq.Named("masq");
  EXPECT_EQ(masq.Text(), "masquerade");
  R snat;
  snat.Imm(Ip4("198.51.100.1"), NFT_REG_1).Nat(NFT_NAT_SNAT, NFPROTO_IPV4, NFT_REG_1, std::nullopt);
  EXPECT_EQ(snat.Text(), "snat to 198.51.100.1");
  Fw in;
  in.Chain("input", true, NF_INET_LOCAL_IN, "nat");
  in.Rule("input", std::move(snat));
  in.Rule("input", std::move(masq));
  EXPECT_EQ(in.Walk(F(143)).reach, Reach::kReaches);  // source NAT on input: the connection goes on
}

TEST(NftRules, StatelessRewritesOfTheDestination) {
  Fw fw;
  fw.Chain("prerouting", true, NF_INET_PRE_ROUTING, "filter", -300);
  fw.Chain("input", true);
  R rewrite;
  rewrite.Tcp().Dport().Cmp(NFT_CMP_EQ, Be16(2143)).Imm(Be16(143), NFT_REG_1)
      .PayloadSet(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, NFT_REG_1);
  EXPECT_EQ(rewrite.Text(), "tcp dport 2143 tcp dport set 143");
  R drop;
  drop.Tcp().Dport().Cmp(NFT_CMP_EQ, Be16(143)).Drop();
  fw.Rule("prerouting", std::move(rewrite));
  fw.Rule("input", std::move(drop));
  EXPECT_EQ(fw.Walk(F(2143)).reach, Reach::kBlocked);  // rewritten to 143, then dropped
  EXPECT_EQ(fw.Walk(F(3143)).reach, Reach::kReaches);
}

TEST(NftRules, RateLimitsAndPerSourceMeters) {
  R limit;
  limit.Tcp().Dport().Cmp(NFT_CMP_EQ, Be16(143)).Limit(10, 1, true).Drop();
  EXPECT_EQ(limit.Text(), "tcp dport 143 limit rate over 10/second drop");
  EXPECT_EQ(One(std::move(limit), F(143)).reach, Reach::kMaybeBlocked);

  auto meter = [] {
    R r;
    r.Tcp().Dport().Cmp(NFT_CMP_EQ, Be16(143)).Saddr4().Dynset("meter", NFT_REG_1, R::LimitExpr(10, 60, true, 5)).Drop();
    return r;
  };
  EXPECT_EQ(meter().Text(), "tcp dport 143 update @meter { ip saddr limit rate over 10/minute burst 5 packets } drop");
  Verdict v = One(meter(), F(143));
  EXPECT_EQ(v.reach, Reach::kReaches);  // a first connection is under any limit
  EXPECT_EQ(v.restrictions.size(), 1u);

  R quota;
  quota.Quota(1000, true).Drop();
  EXPECT_EQ(quota.Text(), "quota over 1000 bytes drop");
  EXPECT_EQ(One(std::move(quota), F(143)).reach, Reach::kMaybeBlocked);
  R connlimit;
  connlimit.U32Attr("connlimit", {{NFTNL_EXPR_CONNLIMIT_COUNT, 5}, {NFTNL_EXPR_CONNLIMIT_FLAGS, NFT_CONNLIMIT_F_INV}}).Drop();
  EXPECT_EQ(connlimit.Text(), "ct count over 5 drop");
  R day;
  day.Limit(3, 86400, false).Accept();
  EXPECT_EQ(day.Text(), "limit rate 3/day accept");
  R odd;
  odd.Limit(3, 7, false).Accept();
  EXPECT_EQ(odd.Text(), "limit rate 3/7s accept");
}

TEST(NftRules, JumpGotoReturnAndStatements) {
  Fw fw;
  fw.Chain("input", true);
  fw.Chain("mail");
  fw.Chain("deny");
  R jump;
  jump.Counter().Log("in: ", 2).Verdict(NFT_JUMP, "mail");
  EXPECT_EQ(jump.Text(), "counter log prefix \"in: \" group 2 jump mail");
  R ret;
  ret.Tcp().Dport().Cmp(NFT_CMP_EQ, Be16(993)).Verdict(NFT_RETURN);
  EXPECT_EQ(ret.Text(), "tcp dport 993 return");
  R go;
  go.Verdict(NFT_GOTO, "deny");
  EXPECT_EQ(go.Text(), "goto deny");
  R drop;
  drop.Named("notrack").Drop();
  EXPECT_EQ(drop.Text(), "notrack drop");
  fw.Rule("input", std::move(jump));
  fw.Rule("mail", std::move(ret));
  fw.Rule("mail", std::move(go));
  fw.Rule("deny", std::move(drop));
  Verdict v = fw.Walk(F(143));
  EXPECT_EQ(v.reach, Reach::kBlocked);
  EXPECT_EQ(v.decided_by->chain, "deny");
  EXPECT_EQ(fw.Walk(F(993)).reach, Reach::kReaches);

  R cont;
  cont.Verdict(NFT_CONTINUE);
  EXPECT_EQ(cont.Text(), "continue");
  R queue;
  queue.Named("queue");
  EXPECT_EQ(queue.Text(), "queue");
  EXPECT_EQ(One(std::move(queue), F(143)).reach, Reach::kMaybeBlocked);  // user space may drop
}

TEST(NftRules, XtablesCompatTargetsAndMatches) {
  R log;
  log.Str("target", NFTNL_EXPR_TG_NAME, "LOG");
  EXPECT_EQ(log.Text(), "xt target LOG");
  EXPECT_EQ(One(std::move(log), F(143)).reach, Reach::kReaches);  // not a verdict
  R drop;
  drop.Str("target", NFTNL_EXPR_TG_NAME, "REJECT");
  EXPECT_EQ(One(std::move(drop), F(143)).reach, Reach::kBlocked);
  R accept;
  accept.Str("target", NFTNL_EXPR_TG_NAME, "ACCEPT");
  EXPECT_EQ(One(std::move(accept), F(143)).reach, Reach::kReaches);
  R match;
  match.Str("match", NFTNL_EXPR_MT_NAME, "recent").Drop();
  EXPECT_EQ(match.Text(), "xt match recent drop");
  EXPECT_EQ(One(std::move(match), F(143)).reach, Reach::kMaybeBlocked);
}

TEST(NftRules, TcpFlagsAndOptions) {
  auto syn = [] {
    R r;
    r.Tcp().Payload(NFT_PAYLOAD_TRANSPORT_HEADER, 13, 1).Bitwise({0x12}, {0}).Cmp(NFT_CMP_EQ, {0x02}).Drop();
    return r;
  };
  EXPECT_EQ(syn().Text(), "tcp flags & (syn|ack) == syn drop");
  EXPECT_EQ(One(syn(), F(143)).reach, Reach::kBlocked);  // a SYN without ACK
  R mss;
  mss.Tcp().Exthdr(NFT_EXTHDR_OP_TCPOPT, 2, 2, 2, false).Cmp(NFT_CMP_LT, Be16(500)).Drop();
  EXPECT_EQ(mss.Text(), "tcp option maxseg size < 500 drop");
  EXPECT_EQ(One(std::move(mss), F(143)).reach, Reach::kMaybeBlocked);
  R hbh(NFPROTO_IPV6);
  hbh.Exthdr(NFT_EXTHDR_OP_IPV6, 0, 0, 1, true).Cmp(NFT_CMP_EQ, {1}).Drop();
  EXPECT_EQ(hbh.Text(), "exthdr hbh exists drop");
  EXPECT_EQ(One(std::move(hbh), F(143, nullptr, Family::kV6)).reach, Reach::kReaches);
  R frag(NFPROTO_IPV6);
  frag.Exthdr(NFT_EXTHDR_OP_IPV6, 44, 2, 2, false).Cmp(NFT_CMP_EQ, Be16(0)).Drop();
  EXPECT_EQ(frag.Text(), "exthdr frag @16,16 0 drop");
  EXPECT_EQ(One(std::move(frag), F(143, nullptr, Family::kV6)).reach, Reach::kReaches);  // absent: the kernel breaks
  R win;
  win.Exthdr(NFT_EXTHDR_OP_TCPOPT, 3, 2, 1, false).Cmp(NFT_CMP_EQ, {7}).Drop();
  EXPECT_EQ(win.Text(), "tcp option window count 7 drop");
}

TEST(NftRules, ValuesMailwardCannotKnowAreUndecided) {
  R ng;
  ng.U32Attr("numgen", {{NFTNL_EXPR_NG_DREG, NFT_REG_1}, {NFTNL_EXPR_NG_MODULUS, 2}, {NFTNL_EXPR_NG_TYPE, NFT_NG_INCREMENTAL}})
      .Cmp(NFT_CMP_EQ, U32(0)).Drop();
  EXPECT_EQ(ng.Text(), "numgen inc mod 2 0 drop");
  EXPECT_EQ(One(std::move(ng), F(143)).reach, Reach::kMaybeBlocked);
  R hash;
  hash.Saddr4().U32Attr("hash", {{NFTNL_EXPR_HASH_SREG, NFT_REG_1}, {NFTNL_EXPR_HASH_DREG, NFT_REG_2},
                                 {NFTNL_EXPR_HASH_MODULUS, 4}, {NFTNL_EXPR_HASH_TYPE, NFT_HASH_JENKINS}})
      .Cmp(NFT_CMP_EQ, U32(3), NFT_REG_2).Drop();
  EXPECT_EQ(hash.Text(), "jhash ip saddr mod 4 3 drop");
  EXPECT_EQ(One(std::move(hash), F(143)).reach, Reach::kMaybeBlocked);
  R rt;
  rt.U32Attr("rt", {{NFTNL_EXPR_RT_DREG, NFT_REG_1}, {NFTNL_EXPR_RT_KEY, NFT_RT_NEXTHOP4}}).Cmp(NFT_CMP_EQ, Ip4("198.51.100.254")).Drop();
  EXPECT_EQ(rt.Text(), "rt ip nexthop 198.51.100.254 drop");
  R sock;
  sock.U32Attr("socket", {{NFTNL_EXPR_SOCKET_DREG, NFT_REG_1}, {NFTNL_EXPR_SOCKET_KEY, NFT_SOCKET_TRANSPARENT}})
      .Cmp(NFT_CMP_EQ, {1}).Accept();
  EXPECT_EQ(sock.Text(), "socket transparent 1 accept");
  R skuid;
  skuid.Meta(NFT_META_SKUID).Cmp(NFT_CMP_EQ, U32(0)).Drop();
  EXPECT_EQ(skuid.Text(), "meta skuid 0x00000000 drop");
  EXPECT_EQ(One(std::move(skuid), F(143)).reach, Reach::kReaches);  // no socket on input yet: the kernel breaks
  R oifname;
  oifname.Meta(NFT_META_OIFNAME).Cmp(NFT_CMP_EQ, Name("eth0")).Drop();
  EXPECT_EQ(One(std::move(oifname), F(143)).reach, Reach::kReaches);  // no output interface on input
  R shift;
  shift.Meta(NFT_META_MARK).Shift(4).Cmp(NFT_CMP_EQ, U32(0)).Drop();
  EXPECT_EQ(One(std::move(shift), F(143)).reach, Reach::kMaybeBlocked);
  R order;
  order.Dport().Byteorder(2, 2).Cmp(NFT_CMP_EQ, {143, 0}).Drop();  // 143 in host order (little-endian)
  EXPECT_EQ(One(std::move(order), F(143)).reach, Reach::kBlocked);
  R pkt;
  pkt.Meta(NFT_META_PKTTYPE).Cmp(NFT_CMP_EQ, {PACKET_BROADCAST}).Drop();
  EXPECT_EQ(pkt.Text(), "meta pkttype broadcast drop");
  EXPECT_EQ(One(std::move(pkt), F(143)).reach, Reach::kReaches);
  R proto;
  proto.Meta(NFT_META_PROTOCOL).Cmp(NFT_CMP_EQ, Be16(0x86dd)).Drop();
  EXPECT_EQ(proto.Text(), "meta protocol 0x86dd drop");
  EXPECT_EQ(One(std::move(proto), F(143)).reach, Reach::kReaches);
  R objref;
  objref.Str("objref", NFTNL_EXPR_OBJREF_IMM_NAME, "q1");
  EXPECT_EQ(objref.Text(), "object q1");
}

TEST(NftRules, UnreadableRulesAndChainsOnOtherHooks) {
  Fw fw;
  auto& in = fw.Chain("input", true);
  in.rules.clear();
  fw.chains.back().rules.push_back(nullptr);  // a rule libnftnl could not parse
  Topology t;
  AddNftTables(fw.chains, fw.sets, &t);
  ASSERT_EQ(t.tables.size(), 1u);
  EXPECT_EQ(t.tables[0].Label(), "table inet t");
  EXPECT_EQ(t.tables[0].chains["input"].rules[0]->Text(), "(a rule libnftnl cannot read)");
  EXPECT_EQ(Walk(t, F(143)).reach, Reach::kMaybeBlocked);

  // An output chain is not on the path of an incoming connection.
  Fw out;
  out.Chain("output", true, NF_INET_LOCAL_OUT);
  R drop;
  drop.Drop();
  out.Rule("output", std::move(drop));
  EXPECT_EQ(out.Walk(F(143)).reach, Reach::kReaches);

  EXPECT_STREQ(NftFamilyName(NFPROTO_IPV4), "ip");
  EXPECT_STREQ(NftFamilyName(NFPROTO_IPV6), "ip6");
  EXPECT_STREQ(NftFamilyName(NFPROTO_NETDEV), "netdev");
  EXPECT_STREQ(NftFamilyName(NFPROTO_BRIDGE), "bridge");
  EXPECT_STREQ(NftFamilyName(NFPROTO_ARP), "arp");
  EXPECT_STREQ(NftFamilyName(99), "unknown");
}


TEST(NftRules, ForwardedFlowsMeetOutputInterfaceMatches) {
  auto fw = [](R&& forward_rule) {
    Fw f;
    f.Chain("prerouting", true, NF_INET_PRE_ROUTING, "nat", -100);
    f.Chain("forward", true, NF_INET_FORWARD);
    R dnat;
    dnat.Tcp().Dport().Cmp(NFT_CMP_EQ, Be16(143)).Imm(Ip4("172.17.0.2"), NFT_REG_1).Nat(NFT_NAT_DNAT, NFPROTO_IPV4, NFT_REG_1, std::nullopt);
    f.Rule("prerouting", std::move(dnat));
    f.Rule("forward", std::move(forward_rule));
    return f.Walk(F(143));
  };
  R docker;
  docker.Meta(NFT_META_OIFNAME).Cmp(NFT_CMP_EQ, Name("docker0")).Drop();
  EXPECT_EQ(docker.Text(), "oifname \"docker0\" drop");
  Verdict v = fw(std::move(docker));
  EXPECT_EQ(v.reach, Reach::kBlocked);
  EXPECT_EQ(v.decided_by->chain, "forward");
  R eth;
  eth.Meta(NFT_META_OIFNAME).Cmp(NFT_CMP_EQ, Name("eth0")).Drop();
  Verdict r = fw(std::move(eth));
  EXPECT_EQ(r.reach, Reach::kReaches);
  EXPECT_EQ(r.destination, "172.17.0.2:143");
  R type;
  type.Meta(NFT_META_OIFTYPE).Cmp(NFT_CMP_EQ, {1, 0}).Drop();  // ARPHRD_ETHER
  EXPECT_EQ(fw(std::move(type)).reach, Reach::kBlocked);
  R oif;
  oif.Meta(NFT_META_OIF).Cmp(NFT_CMP_EQ, U32(1)).Drop();  // 1 is loopback: never the way out
  EXPECT_EQ(fw(std::move(oif)).reach, Reach::kReaches);
}

TEST(NftRules, StatelessDestinationRewrites) {
  Fw fw;
  fw.Chain("prerouting", true, NF_INET_PRE_ROUTING, "filter", -300);
  R to;
  to.Tcp().Dport().Cmp(NFT_CMP_EQ, Be16(143)).Imm(Ip4("172.17.0.2"), NFT_REG_1)
      .PayloadSet(NFT_PAYLOAD_NETWORK_HEADER, 16, 4, NFT_REG_1);
  EXPECT_EQ(to.Text(), "tcp dport 143 ip daddr set 172.17.0.2");
  R unknown;
  unknown.Tcp().Dport().Cmp(NFT_CMP_EQ, Be16(993)).Meta(NFT_META_IIF, NFT_REG_2)
      .PayloadSet(NFT_PAYLOAD_NETWORK_HEADER, 16, 4, NFT_REG_2);
  EXPECT_EQ(unknown.Text(), "tcp dport 993 ip daddr set iif");
  fw.Rule("prerouting", std::move(to));
  fw.Rule("prerouting", std::move(unknown));
  Verdict v = fw.Walk(F(143));
  EXPECT_EQ(v.reach, Reach::kReaches);
  EXPECT_EQ(v.destination, "172.17.0.2:143");
  EXPECT_EQ(fw.Walk(F(993)).reach, Reach::kMaybeBlocked);  // sent somewhere mailward cannot tell
}

TEST(NftRules, RedirectAndMasqueradeOnIpv6) {
  Fw fw;
  fw.Chain("prerouting", true, NF_INET_PRE_ROUTING, "nat", -100);
  fw.Chain("input", true, NF_INET_LOCAL_IN, "nat", 100);
  R redir;
  redir.Tcp().Dport().Cmp(NFT_CMP_EQ, Be16(110)).Imm(Be16(10110), NFT_REG_1).Redir(NFT_REG_1);
  R masq;
  masq.Named("masq");
  fw.Rule("prerouting", std::move(redir));
  fw.Rule("input", std::move(masq));
  Verdict v = fw.Walk(F(110, nullptr, Family::kV6));
  EXPECT_EQ(v.reach, Reach::kReaches);
  EXPECT_EQ(v.destination, "[::1]:10110");
  EXPECT_EQ(fw.Walk(F(143, nullptr, Family::kV6)).reach, Reach::kReaches);
}

TEST(NftRules, NamedObjectsByMapAndByName) {
  auto by_map = [] {
    R r;
    r.Saddr4();
    nftnl_rule* raw = const_cast<nftnl_rule*>(r.get());
    nftnl_expr* e = nftnl_expr_alloc("objref");
    nftnl_expr_set_u32(e, NFTNL_EXPR_OBJREF_SET_SREG, NFT_REG_1);
    nftnl_expr_set_str(e, NFTNL_EXPR_OBJREF_SET_NAME, "quotas");
    nftnl_rule_add_expr(raw, e);
    r.Drop();
    return r;
  };
  auto fill = [](Sets& s) { s.sets["quotas"] = {4, {{Ip4("203.0.113.9"), {}, std::nullopt, ""}}}; };
  EXPECT_EQ(by_map().Text(), "object name ip saddr map @quotas drop");
  EXPECT_EQ(One(by_map(), F(143, "203.0.113.9"), fill).reach, Reach::kMaybeBlocked);  // the quota's state decides
  EXPECT_EQ(One(by_map(), F(143, "203.0.113.8"), fill).reach, Reach::kReaches);       // no element: the kernel breaks
  EXPECT_EQ(One(by_map(), F(143, "203.0.113.9"), [&](Sets& s) { fill(s); s.unreadable.insert("quotas"); }).reach,
            Reach::kMaybeBlocked);
  Verdict ordinary = One(by_map(), F(143), fill);
  EXPECT_EQ(ordinary.reach, Reach::kReaches);
  EXPECT_EQ(ordinary.restrictions.size(), 1u);
  EXPECT_EQ(One(by_map(), F(143, "203.0.113.9")).reach, Reach::kMaybeBlocked);  // no such map

  R lim;
  lim.U32Attr("objref", {{NFTNL_EXPR_OBJREF_IMM_TYPE, NFT_OBJECT_LIMIT}}).Drop();
  EXPECT_EQ(One(std::move(lim), F(143)).reach, Reach::kMaybeBlocked);
  R syn;
  syn.U32Attr("objref", {{NFTNL_EXPR_OBJREF_IMM_TYPE, NFT_OBJECT_SYNPROXY}});
  EXPECT_EQ(One(std::move(syn), F(143)).reach, Reach::kMaybeBlocked);  // handed over: may drop
}

TEST(NftRules, UndecidableShapesAreMaybes) {
  // A verdict map that cannot be read, or that does not exist: a possible drop.
  auto vmap = [] {
    R r;
    r.Tcp().Dport().Lookup("ports", NFT_REG_1, NFT_REG_VERDICT);
    return r;
  };
  EXPECT_EQ(One(vmap(), F(143)).reach, Reach::kMaybeBlocked);
  EXPECT_EQ(One(vmap(), F(143), [](Sets& s) { s.sets["ports"] = {2, {}}; s.unreadable.insert("ports"); }).reach,
            Reach::kMaybeBlocked);
  // Source and destination of different lengths in a range; a link-layer load; a register
  // beyond the register file.
  R range;
  range.Dport().Range(NFT_RANGE_EQ, Be16(1), {0, 0, 0, 9}).Drop();
  EXPECT_EQ(One(std::move(range), F(143)).reach, Reach::kMaybeBlocked);
  R ll;
  ll.Payload(NFT_PAYLOAD_LL_HEADER, 6, 6).Cmp(NFT_CMP_EQ, {0, 1, 2, 3, 4, 5}).Drop();
  EXPECT_EQ(ll.Text(), "@ll,48,48 0x000102030405 drop");
  EXPECT_EQ(One(std::move(ll), F(143)).reach, Reach::kMaybeBlocked);
  R wide;
  wide.Meta(NFT_META_MARK, NFT_REG_4).Bitwise(Bytes(20, 0xff), Bytes(20, 0), NFT_REG_4, NFT_REG_4).Drop();
  EXPECT_EQ(One(std::move(wide), F(143)).reach, Reach::kMaybeBlocked);
  R swap;
  swap.Meta(NFT_META_MARK, NFT_REG_4).Byteorder(20, 4, NFT_REG_4, NFT_REG_4).Drop();
  EXPECT_EQ(One(std::move(swap), F(143)).reach, Reach::kMaybeBlocked);
  // The IPv4 header's first byte is known (version 4, no options), the TOS is not.
  R ver;
  ver.Payload(NFT_PAYLOAD_NETWORK_HEADER, 0, 1).Cmp(NFT_CMP_EQ, {0x45}).Drop();
  EXPECT_EQ(ver.Text(), "@nh,0,8 0x45 drop");
  EXPECT_EQ(One(std::move(ver), F(143)).reach, Reach::kBlocked);
  R tos;
  tos.Payload(NFT_PAYLOAD_NETWORK_HEADER, 1, 1).Cmp(NFT_CMP_EQ, {0x10}).Drop();
  EXPECT_EQ(One(std::move(tos), F(143)).reach, Reach::kMaybeBlocked);
  // A verdict code that hands the packet to user space.
  R q;
  q.Verdict(NF_QUEUE);
  EXPECT_EQ(q.Text(), "verdict 3");
  EXPECT_EQ(One(std::move(q), F(143)).reach, Reach::kMaybeBlocked);
  R brk;
  brk.Verdict(NFT_BREAK);
  EXPECT_EQ(One(std::move(brk), F(143)).reach, Reach::kReaches);
}

TEST(NftRules, MulticastBroadcastAndLoopbackSources) {
  auto rule = [] {
    R r;
    r.Fib(NFTA_FIB_F_SADDR, NFT_FIB_RESULT_ADDRTYPE).Cmp(NFT_CMP_EQ, U32(RTN_MULTICAST)).Drop();
    return r;
  };
  EXPECT_EQ(rule().Text(), "fib saddr type multicast drop");
  EXPECT_EQ(One(rule(), F(143, "224.0.0.9")).reach, Reach::kBlocked);
  EXPECT_EQ(One(rule(), F(143, "ff02::9", Family::kV6)).reach, Reach::kBlocked);
  EXPECT_EQ(One(rule(), F(143, "2001:db8::9", Family::kV6)).reach, Reach::kReaches);
  R bc;
  bc.Fib(NFTA_FIB_F_SADDR, NFT_FIB_RESULT_ADDRTYPE).Cmp(NFT_CMP_EQ, U32(RTN_BROADCAST)).Drop();
  EXPECT_EQ(One(std::move(bc), F(143, "255.255.255.255")).reach, Reach::kBlocked);
  R lo;
  lo.Meta(NFT_META_IIFTYPE).Cmp(NFT_CMP_EQ, {0x04, 0x03}).Drop();  // ARPHRD_LOOPBACK (772)
  EXPECT_EQ(One(std::move(lo), F(143)).reach, Reach::kReaches);
  R iif;
  iif.Meta(NFT_META_IIF).Cmp(NFT_CMP_EQ, U32(1)).Accept();
  R drop;
  drop.Drop();
  Fw fw;
  fw.Chain("input", true);
  fw.Rule("input", std::move(iif));
  fw.Rule("input", std::move(drop));
  EXPECT_EQ(fw.Walk(F(143)).reach, Reach::kBlocked);  // interface 1 is loopback: not this flow's
}

TEST(NftRules, TextOfLessCommonExpressions) {
  R ct;
  ct.Ct(NFT_CT_PROTO_SRC).Cmp(NFT_CMP_EQ, Be16(25)).Ct(NFT_CT_DST_IP6, NFT_REG_2, 1).Cmp(NFT_CMP_EQ, Ip6("2001:db8::1"), NFT_REG_2)
      .Ct(NFT_CT_EXPIRATION, NFT_REG_3).Cmp(NFT_CMP_GTE, U32(5), NFT_REG_3).Drop();
  EXPECT_EQ(ct.Text(), "ct proto-src 25 ct reply ip6 daddr 2001:db8::1 ct key 5 >= 0x05000000 drop");
  EXPECT_EQ(One(std::move(ct), F(143, nullptr, Family::kV6)).reach, Reach::kMaybeBlocked);
  R meta;
  meta.Meta(NFT_META_CPU).Cmp(NFT_CMP_NEQ, U32(0)).Drop();
  EXPECT_EQ(meta.Text(), "meta key " + std::to_string(NFT_META_CPU) + " != 0x00000000 drop");
  R opts;
  opts.Exthdr(NFT_EXTHDR_OP_TCPOPT, 4, 0, 1, true).Cmp(NFT_CMP_EQ, {1}).Exthdr(NFT_EXTHDR_OP_TCPOPT, 30, 1, 1, false, NFT_REG_2)
      .Cmp(NFT_CMP_EQ, {4}, NFT_REG_2).Exthdr(NFT_EXTHDR_OP_TCPOPT, 8, 2, 4, false, NFT_REG_3).Cmp(NFT_CMP_EQ, {0, 0, 0, 1}, NFT_REG_3);
  EXPECT_EQ(opts.Text(), "tcp option sack-perm exists tcp option 30 length 4 tcp option timestamp @16,32 1");
  R ipopt;
  ipopt.Exthdr(NFT_EXTHDR_OP_IPV4, 7, 0, 1, true).Cmp(NFT_CMP_EQ, {1}).Drop();
  EXPECT_EQ(ipopt.Text(), "ip option 7 exists drop");
  EXPECT_EQ(One(std::move(ipopt), F(143)).reach, Reach::kReaches);  // an ordinary SYN has no IP options
  R gen;
  gen.U32Attr("numgen", {{NFTNL_EXPR_NG_DREG, NFT_REG_1}, {NFTNL_EXPR_NG_MODULUS, 4}, {NFTNL_EXPR_NG_TYPE, NFT_NG_RANDOM},
                         {NFTNL_EXPR_NG_OFFSET, 100}})
      .Cmp(NFT_CMP_EQ, U32(101));
  EXPECT_EQ(gen.Text(), "numgen random mod 4 offset 100 101");
  R sym;
  sym.U32Attr("hash", {{NFTNL_EXPR_HASH_DREG, NFT_REG_1}, {NFTNL_EXPR_HASH_MODULUS, 2}, {NFTNL_EXPR_HASH_TYPE, NFT_HASH_SYM}})
      .Cmp(NFT_CMP_EQ, U32(1));
  EXPECT_EQ(sym.Text(), "symhash mod 2 1");
  R osf;
  osf.U32Attr("osf", {{NFTNL_EXPR_OSF_DREG, NFT_REG_1}}).Cmp(NFT_CMP_EQ, Name("Linux")).Drop();
  EXPECT_EQ(osf.Text().rfind("osf name 0x4c696e7578", 0), 0u) << osf.Text();
  EXPECT_EQ(One(std::move(osf), F(143)).reach, Reach::kMaybeBlocked);
  R mtu;
  mtu.U32Attr("rt", {{NFTNL_EXPR_RT_DREG, NFT_REG_1}, {NFTNL_EXPR_RT_KEY, NFT_RT_TCPMSS}}).Cmp(NFT_CMP_GT, U32(1400));
  EXPECT_EQ(mtu.Text(), "rt mtu > 1400");
  R last;
  last.Named("last").Drop();
  EXPECT_EQ(last.Text(), "last drop");
  EXPECT_EQ(One(std::move(last), F(143)).reach, Reach::kBlocked);  // a statement: the drop decides
  R status;
  status.Ct(NFT_CT_STATUS).Cmp(NFT_CMP_EQ, U32(IPS_SEEN_REPLY | IPS_ASSURED | IPS_CONFIRMED | IPS_SRC_NAT | IPS_EXPECTED | IPS_DYING));
  EXPECT_EQ(status.Text(), "ct status expected,seen-reply,assured,confirmed,snat,dying");
  R flags;
  flags.Payload(NFT_PAYLOAD_TRANSPORT_HEADER, 13, 1).Cmp(NFT_CMP_EQ, {0xff});
  EXPECT_EQ(flags.Text(), "tcp flags fin|syn|rst|psh|ack|urg|ecn|cwr");
  R none;
  none.Payload(NFT_PAYLOAD_TRANSPORT_HEADER, 13, 1).Cmp(NFT_CMP_EQ, {0});
  EXPECT_EQ(none.Text(), "tcp flags 0x0");
  R proto;
  proto.Payload(NFT_PAYLOAD_NETWORK_HEADER, 9, 1).Cmp(NFT_CMP_EQ, {IPPROTO_UDP}).Payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2)
      .Cmp(NFT_CMP_EQ, Be16(53));
  EXPECT_EQ(proto.Text(), "ip protocol udp udp dport 53");
  R icmp;
  icmp.Meta(NFT_META_L4PROTO).Cmp(NFT_CMP_EQ, {IPPROTO_ICMPV6}).Meta(NFT_META_NFPROTO).Cmp(NFT_CMP_EQ, {7});
  EXPECT_EQ(icmp.Text(), "meta l4proto ipv6-icmp");
  R gre;
  gre.Meta(NFT_META_L4PROTO).Cmp(NFT_CMP_EQ, {47}).Meta(NFT_META_PKTTYPE).Cmp(NFT_CMP_EQ, {7});
  EXPECT_EQ(gre.Text(), "meta l4proto 47 meta pkttype other");
}

}  // namespace
}  // namespace mw::analysis
