#include "analysis/nft_eval.h"

#include <arpa/inet.h>
#include <cstdio>
#include <libnftnl/expr.h>
#include <linux/if_arp.h>
#include <linux/if_packet.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nf_nat.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>

#include <cstring>
#include <map>

namespace mw::analysis {

const char* NftFamilyName(uint32_t f) {
  switch (f) {
    case NFPROTO_IPV4: return "ip";
    case NFPROTO_IPV6: return "ip6";
    case NFPROTO_INET: return "inet";
    case NFPROTO_NETDEV: return "netdev";
    case NFPROTO_BRIDGE: return "bridge";
    case NFPROTO_ARP: return "arp";
    default: return "unknown";
  }
}

namespace {

// ---- the register file ------------------------------------------------------------------

enum class Tag : uint8_t { kKnown, kUnknown, kSource };
constexpr uint8_t kHintNotLoopback = 1, kHintNonZero = 2;

/// The kernel's nft_regs data area (20 words), each byte with what mailward knows of it.
struct Regs {
  static constexpr size_t kBytes = 80;
  uint8_t v[kBytes]{};
  Tag tag[kBytes];
  uint8_t hint[kBytes]{};
  Regs() {
    for (auto& t : tag) t = Tag::kUnknown;
  }
  /// Byte offset of a netlink register number (nft_parse_register).
  static size_t Offset(uint32_t reg) {
    if (reg <= NFT_REG_4) return reg * 16;
    return (reg - NFT_REG32_00 + 4) * 4;
  }
  bool Fits(size_t off, size_t len) const { return off + len <= kBytes; }
  void SetKnown(size_t off, const void* p, size_t len) {
    if (!Fits(off, len)) return;
    std::memcpy(v + off, p, len);
    for (size_t i = 0; i < len; ++i) {
      tag[off + i] = Tag::kKnown;
      hint[off + i] = 0;
    }
    PadWord(off, len);
  }
  void SetTag(size_t off, size_t len, Tag t, uint8_t h = 0) {
    if (!Fits(off, len)) return;
    for (size_t i = 0; i < len; ++i) {
      v[off + i] = 0;
      tag[off + i] = t;
      hint[off + i] = h;
    }
    PadWord(off, len);
  }
  /// The kernel zeroes the rest of the last 32-bit word of a load.
  void PadWord(size_t off, size_t len) {
    size_t end = off + len;
    while (end % 4 != 0 && end < kBytes) {
      v[end] = 0;
      tag[end] = Tag::kKnown;
      hint[end] = 0;
      ++end;
    }
  }
  /// The strongest tag in a range: source beats unknown beats known.
  Tag Worst(size_t off, size_t len) const {
    Tag w = Tag::kKnown;
    for (size_t i = off; i < off + len && i < kBytes; ++i) {
      if (tag[i] == Tag::kSource) return Tag::kSource;
      if (tag[i] == Tag::kUnknown) w = Tag::kUnknown;
    }
    return w;
  }
};

void PutU32(Regs* r, size_t off, uint32_t x) { r->SetKnown(off, &x, 4); }

// ---- evaluation ---------------------------------------------------------------------------

struct Ctx {
  const FlowState& st;
  uint32_t family;  // the table's NFPROTO
  const std::string& table;
  NftSets* sets;
};

/// Accumulates a rule's match for the ordinary source and for "some source".
struct Acc {
  Tri ordinary = Tri::kYes;  // what the rule does for the flow
  Tri others = Tri::kYes;    // the rule's other matches (source tests taken as satisfied)
  bool source_dependent = false;
  bool stop = false;         // a non-source match failed: the rule does not apply at all
  void Test(Tri t, bool from_source) {
    if (from_source) {
      source_dependent = true;
      ordinary = And(ordinary, t);
      return;
    }
    if (t == Tri::kNo) stop = true;
    ordinary = And(ordinary, t);
    others = And(others, t);
  }
};

Tri CompareBytes(const uint8_t* a, const void* b, size_t len, uint32_t op) {
  int c = std::memcmp(a, b, len);
  switch (op) {
    case NFT_CMP_EQ: return FromBool(c == 0);
    case NFT_CMP_NEQ: return FromBool(c != 0);
    case NFT_CMP_LT: return FromBool(c < 0);
    case NFT_CMP_LTE: return FromBool(c <= 0);
    case NFT_CMP_GT: return FromBool(c > 0);
    case NFT_CMP_GTE: return FromBool(c >= 0);
  }
  return Tri::kMaybe;
}

bool IsLoopbackValue(const void* data, uint32_t len) {
  auto* b = static_cast<const uint8_t*>(data);
  if (len >= 3 && b[0] == 'l' && b[1] == 'o' && b[2] == 0) return true;
  if (len == 4) {
    uint32_t v;
    std::memcpy(&v, data, 4);
    return v == 1;
  }
  if (len == 2) {
    uint16_t v;
    std::memcpy(&v, data, 2);
    return v == ARPHRD_LOOPBACK;
  }
  return false;
}

bool AllZero(const void* data, uint32_t len) {
  auto* b = static_cast<const uint8_t*>(data);
  for (uint32_t i = 0; i < len; ++i)
    if (b[i]) return false;
  return true;
}

/// A comparison of register bytes [off, off+len) with `data` (`op` as cmp), or a range test.
/// Returns the result and whether it was decided by the ordinary-source assumption.
std::pair<Tri, bool> Decide(const Regs& regs, size_t off, uint32_t len, const void* data, uint32_t op,
                            const void* to = nullptr) {
  if (!regs.Fits(off, len) || !data) return {Tri::kMaybe, false};
  Tag w = regs.Worst(off, len);
  if (w == Tag::kSource) {
    // An ordinary source is in no list a rule names: equality and ranges miss, negations hit.
    bool negated = op == NFT_CMP_NEQ || (to && op == NFT_RANGE_NEQ);
    return {negated ? Tri::kYes : Tri::kNo, true};
  }
  if (w == Tag::kUnknown) {
    uint8_t h = regs.hint[off];
    bool eq = !to && op == NFT_CMP_EQ, neq = !to && op == NFT_CMP_NEQ;
    if ((h & kHintNotLoopback) && (eq || neq) && IsLoopbackValue(data, len)) return {FromBool(neq), false};
    if ((h & kHintNonZero) && (eq || neq) && AllZero(data, len)) return {FromBool(neq), false};
    return {Tri::kMaybe, false};
  }
  if (to) {
    bool in = std::memcmp(regs.v + off, data, len) >= 0 && std::memcmp(regs.v + off, to, len) <= 0;
    return {FromBool(in == (op == NFT_RANGE_EQ)), false};
  }
  return {CompareBytes(regs.v + off, data, len, op), false};
}

uint32_t RouteType(Family f, const Addr& a) {
  if (f == Family::kV4) {
    if (a.b[0] >= 224 && a.b[0] < 240) return RTN_MULTICAST;
    if (a.b[0] == 255 && a.b[1] == 255 && a.b[2] == 255 && a.b[3] == 255) return RTN_BROADCAST;
    if (a.b[0] == 127) return RTN_LOCAL;
    return RTN_UNICAST;
  }
  if (a.b[0] == 0xff) return RTN_MULTICAST;
  return RTN_UNICAST;
}

/// Loads packet bytes of the network header: per byte, the flow's field or unknown.
void LoadNetwork(const Ctx& c, Regs* regs, size_t dst, uint32_t off, uint32_t len) {
  const Flow& flow = *c.st.flow;
  bool v4 = flow.family == Family::kV4;
  uint32_t saddr_off = v4 ? 12 : 8, daddr_off = v4 ? 16 : 24, alen = v4 ? 4 : 16;
  uint32_t proto_off = v4 ? 9 : 6;
  if (!regs->Fits(dst, len)) return;
  for (uint32_t i = 0; i < len; ++i) {
    uint32_t o = off + i;
    size_t d = dst + i;
    regs->hint[d] = 0;
    if (o == proto_off) {
      regs->v[d] = IPPROTO_TCP;
      regs->tag[d] = Tag::kKnown;
    } else if (v4 && o == 0) {
      regs->v[d] = 0x45;  // version 4, no options
      regs->tag[d] = Tag::kKnown;
    } else if (o >= saddr_off && o < saddr_off + alen) {
      if (flow.saddr) {
        regs->v[d] = flow.saddr->b[o - saddr_off];
        regs->tag[d] = Tag::kKnown;
      } else {
        regs->v[d] = 0;
        regs->tag[d] = Tag::kSource;
      }
    } else if (o >= daddr_off && o < daddr_off + alen && c.st.daddr) {
      regs->v[d] = c.st.daddr->b[o - daddr_off];
      regs->tag[d] = Tag::kKnown;
    } else {
      regs->v[d] = 0;
      regs->tag[d] = Tag::kUnknown;
    }
  }
  regs->PadWord(dst, len);
}

void LoadTransport(const Ctx& c, Regs* regs, size_t dst, uint32_t off, uint32_t len) {
  if (!regs->Fits(dst, len)) return;
  uint16_t dport = htons(c.st.dport);
  for (uint32_t i = 0; i < len; ++i) {
    uint32_t o = off + i;
    size_t d = dst + i;
    regs->hint[d] = 0;
    regs->tag[d] = Tag::kKnown;
    if (o == 2 || o == 3) regs->v[d] = reinterpret_cast<const uint8_t*>(&dport)[o - 2];
    else if (o == 13) regs->v[d] = 0x02;  // flags: SYN
    else {
      regs->v[d] = 0;
      regs->tag[d] = Tag::kUnknown;
    }
  }
  regs->PadWord(dst, len);
}

void IfName(Regs* regs, size_t dst, const std::string& name) {
  char buf[16] = {};
  std::strncpy(buf, name.c_str(), 15);
  regs->SetKnown(dst, buf, 16);
}

/// `meta` load. Returns false when the kernel would break (no such data on this hook).
bool LoadMeta(const Ctx& c, Regs* regs, size_t dst, uint32_t key) {
  const Flow& flow = *c.st.flow;
  bool v4 = flow.family == Family::kV4;
  switch (key) {
    case NFT_META_L4PROTO: {
      uint8_t p = IPPROTO_TCP;
      regs->SetKnown(dst, &p, 1);
      return true;
    }
    case NFT_META_NFPROTO: {
      uint8_t p = v4 ? NFPROTO_IPV4 : NFPROTO_IPV6;
      regs->SetKnown(dst, &p, 1);
      return true;
    }
    case NFT_META_PROTOCOL: {
      uint16_t p = htons(v4 ? 0x0800 : 0x86dd);
      regs->SetKnown(dst, &p, 2);
      return true;
    }
    case NFT_META_PKTTYPE: {
      uint8_t p = PACKET_HOST;
      regs->SetKnown(dst, &p, 1);
      return true;
    }
    case NFT_META_IIFNAME:
      if (flow.iif) IfName(regs, dst, *flow.iif);
      else regs->SetTag(dst, 16, Tag::kUnknown, kHintNotLoopback);
      return true;
    case NFT_META_IIF:
      regs->SetTag(dst, 4, Tag::kUnknown, kHintNotLoopback);
      return true;
    case NFT_META_IIFTYPE: {
      uint16_t t = ARPHRD_ETHER;
      regs->SetKnown(dst, &t, 2);
      return true;
    }
    case NFT_META_OIFNAME:
    case NFT_META_OIF:
    case NFT_META_OIFTYPE:
      if (c.st.hook != Hook::kForward) return false;
      if (key == NFT_META_OIFNAME) {
        if (c.st.oif && !c.st.oif->empty()) IfName(regs, dst, *c.st.oif);
        else regs->SetTag(dst, 16, Tag::kUnknown);
      } else if (key == NFT_META_OIF) {
        regs->SetTag(dst, 4, Tag::kUnknown, kHintNotLoopback);
      } else {
        uint16_t t = ARPHRD_ETHER;
        regs->SetKnown(dst, &t, 2);
      }
      return true;
    case NFT_META_MARK:
      if (c.st.mark_known) PutU32(regs, dst, c.st.mark);
      else regs->SetTag(dst, 4, Tag::kUnknown);
      return true;
    case NFT_META_SKUID:
    case NFT_META_SKGID:
      return false;  // no local socket before the input path's demux
    default:
      regs->SetTag(dst, 16, Tag::kUnknown);
      return true;
  }
}

bool LoadCt(const Ctx& c, Regs* regs, size_t dst, uint32_t key, std::optional<uint32_t> dir) {
  const Flow& flow = *c.st.flow;
  bool v4 = flow.family == Family::kV4;
  bool reply = dir && *dir == 1 /* IP_CT_DIR_REPLY */;
  switch (key) {
    case NFT_CT_STATE:
      PutU32(regs, dst, NF_CT_STATE_BIT(IP_CT_NEW));
      return true;
    case NFT_CT_STATUS:
      PutU32(regs, dst, c.st.dnat ? IPS_DST_NAT : 0);
      return true;
    case NFT_CT_DIRECTION: {
      uint8_t d = 0 /* IP_CT_DIR_ORIGINAL */;
      regs->SetKnown(dst, &d, 1);
      return true;
    }
    case NFT_CT_MARK:
      PutU32(regs, dst, c.st.ct_mark);
      return true;
    case NFT_CT_L3PROTOCOL: {
      uint8_t p = v4 ? NFPROTO_IPV4 : NFPROTO_IPV6;
      regs->SetKnown(dst, &p, 1);
      return true;
    }
    case NFT_CT_PROTOCOL: {
      uint8_t p = IPPROTO_TCP;
      regs->SetKnown(dst, &p, 1);
      return true;
    }
    case NFT_CT_PROTO_DST:
      if (reply) {
        regs->SetTag(dst, 2, Tag::kUnknown);
      } else {
        uint16_t p = htons(flow.dport);
        regs->SetKnown(dst, &p, 2);
      }
      return true;
    case NFT_CT_SRC:
    case NFT_CT_SRC_IP:
    case NFT_CT_SRC_IP6:
      if (reply) regs->SetTag(dst, v4 ? 4 : 16, Tag::kUnknown);
      else if (flow.saddr) regs->SetKnown(dst, flow.saddr->b.data(), v4 ? 4 : 16);
      else regs->SetTag(dst, v4 ? 4 : 16, Tag::kSource);
      return true;
    case NFT_CT_DST:
    case NFT_CT_DST_IP:
    case NFT_CT_DST_IP6:
      if (!reply && flow.daddr) regs->SetKnown(dst, flow.daddr->b.data(), v4 ? 4 : 16);
      else regs->SetTag(dst, v4 ? 4 : 16, Tag::kUnknown);
      return true;
    default:
      regs->SetTag(dst, 16, Tag::kUnknown);
      return true;
  }
}

void LoadFib(const Ctx& c, Regs* regs, size_t dst, uint32_t result, uint32_t flags) {
  const Flow& flow = *c.st.flow;
  bool saddr = flags & NFTA_FIB_F_SADDR;
  if (result == NFT_FIB_RESULT_ADDRTYPE) {
    uint32_t type = RTN_UNICAST;
    if (saddr && flow.saddr) type = RouteType(flow.family, *flow.saddr);
    else if (!saddr && c.st.dest_local) type = RTN_LOCAL;
    PutU32(regs, dst, type);
    return;
  }
  if (flags & NFTA_FIB_F_PRESENT) {
    // "oif missing" / "oif exists": a reverse route to an ordinary source exists (anti-spoofing
    // hits only forged sources); the destination of a flow to this host is routed too.
    uint8_t present = 1;
    regs->SetKnown(dst, &present, 1);
    return;
  }
  if (result == NFT_FIB_RESULT_OIF) regs->SetTag(dst, 4, Tag::kUnknown, saddr ? kHintNonZero : 0);
  else regs->SetTag(dst, 16, Tag::kUnknown, saddr ? kHintNonZero : 0);
}

uint32_t U32(const nftnl_expr* e, uint16_t attr, uint32_t def = 0) {
  return nftnl_expr_is_set(e, attr) ? nftnl_expr_get_u32(e, attr) : def;
}

/// Statement expressions: whether a `limit`-like expression (state mailward cannot see) is
/// inside, and whether it only matches when over the limit.
bool IsRateLimit(const nftnl_expr* e, bool* over) {
  const char* n = nftnl_expr_get_str(e, NFTNL_EXPR_NAME);
  if (!n) return false;
  if (std::strcmp(n, "limit") == 0) {
    *over = U32(e, NFTNL_EXPR_LIMIT_FLAGS) & NFT_LIMIT_F_INV;
    return true;
  }
  if (std::strcmp(n, "connlimit") == 0) {
    *over = true;  // "ct count over N": a first connection is under it
    return true;
  }
  return false;
}

class NftRule : public Rule {
 public:
  NftRule(const nftnl_rule* r, uint32_t family, std::string table, std::shared_ptr<NftSets> sets)
      : r_(r), family_(family), table_(std::move(table)), sets_(std::move(sets)) {}

  std::string Text() const override { return r_ ? NftRuleText(r_) : "(a rule libnftnl cannot read)"; }

  RuleResult Evaluate(const FlowState& st) const override {
    using A = RuleResult::Action;
    RuleResult res;
    if (!r_) {
      res.match = Tri::kMaybe;
      res.action = A::kDrop;
      return res;
    }
    Ctx c{st, family_, table_, sets_.get()};
    Regs regs;
    Acc acc;
    bool terminal = false;
    nftnl_expr_iter* it = nftnl_expr_iter_create(r_);
    while (nftnl_expr* e = nftnl_expr_iter_next(it)) {
      if (acc.stop) break;
      std::string name = nftnl_expr_get_str(e, NFTNL_EXPR_NAME);
      if (name == "meta") {
        if (nftnl_expr_is_set(e, NFTNL_EXPR_META_SREG)) {
          size_t s = Regs::Offset(U32(e, NFTNL_EXPR_META_SREG));
          if (U32(e, NFTNL_EXPR_META_KEY) == NFT_META_MARK) {
            if (regs.Worst(s, 4) == Tag::kKnown) {
              uint32_t m;
              std::memcpy(&m, regs.v + s, 4);
              res.set_mark = m;
            } else {
              res.mark_unknown = true;
            }
          }
          continue;
        }
        if (!LoadMeta(c, &regs, Regs::Offset(U32(e, NFTNL_EXPR_META_DREG)), U32(e, NFTNL_EXPR_META_KEY)))
          acc.Test(Tri::kNo, false);
      } else if (name == "payload") {
        if (nftnl_expr_is_set(e, NFTNL_EXPR_PAYLOAD_SREG)) {
          // Payload mangling: a rewritten destination address or port is stateless NAT.
          uint32_t base = U32(e, NFTNL_EXPR_PAYLOAD_BASE), off = U32(e, NFTNL_EXPR_PAYLOAD_OFFSET),
                   len = U32(e, NFTNL_EXPR_PAYLOAD_LEN);
          size_t s = Regs::Offset(U32(e, NFTNL_EXPR_PAYLOAD_SREG));
          bool v4 = st.flow->family == Family::kV4;
          bool daddr = base == NFT_PAYLOAD_NETWORK_HEADER && off == (v4 ? 16u : 24u) && len == (v4 ? 4u : 16u);
          bool dport = base == NFT_PAYLOAD_TRANSPORT_HEADER && off == 2 && len == 2;
          if (!daddr && !dport) continue;
          if (regs.Worst(s, len) != Tag::kKnown) {
            res.rewrite_unknown = true;
            continue;
          }
          if (daddr) {
            Addr a{};
            std::memcpy(a.b.data(), regs.v + s, len);
            res.set_daddr = a;
          } else {
            uint16_t p;
            std::memcpy(&p, regs.v + s, 2);
            res.set_dport = ntohs(p);
          }
          continue;
        }
        size_t d = Regs::Offset(U32(e, NFTNL_EXPR_PAYLOAD_DREG));
        uint32_t base = U32(e, NFTNL_EXPR_PAYLOAD_BASE), off = U32(e, NFTNL_EXPR_PAYLOAD_OFFSET),
                 len = U32(e, NFTNL_EXPR_PAYLOAD_LEN);
        if (base == NFT_PAYLOAD_NETWORK_HEADER) LoadNetwork(c, &regs, d, off, len);
        else if (base == NFT_PAYLOAD_TRANSPORT_HEADER) LoadTransport(c, &regs, d, off, len);
        else regs.SetTag(d, len, Tag::kUnknown);
      } else if (name == "ct") {
        if (nftnl_expr_is_set(e, NFTNL_EXPR_CT_SREG)) {
          size_t s = Regs::Offset(U32(e, NFTNL_EXPR_CT_SREG));
          if (U32(e, NFTNL_EXPR_CT_KEY) == NFT_CT_MARK && regs.Worst(s, 4) == Tag::kKnown) {
            uint32_t m;
            std::memcpy(&m, regs.v + s, 4);
            res.set_ct_mark = m;
          }
          continue;
        }
        std::optional<uint32_t> dir;
        if (nftnl_expr_is_set(e, NFTNL_EXPR_CT_DIR)) dir = nftnl_expr_get_u8(e, NFTNL_EXPR_CT_DIR);
        LoadCt(c, &regs, Regs::Offset(U32(e, NFTNL_EXPR_CT_DREG)), U32(e, NFTNL_EXPR_CT_KEY), dir);
      } else if (name == "fib") {
        LoadFib(c, &regs, Regs::Offset(U32(e, NFTNL_EXPR_FIB_DREG)), U32(e, NFTNL_EXPR_FIB_RESULT),
                U32(e, NFTNL_EXPR_FIB_FLAGS));
      } else if (name == "bitwise") {
        size_t s = Regs::Offset(U32(e, NFTNL_EXPR_BITWISE_SREG)), d = Regs::Offset(U32(e, NFTNL_EXPR_BITWISE_DREG));
        uint32_t len = U32(e, NFTNL_EXPR_BITWISE_LEN);
        uint32_t op = U32(e, NFTNL_EXPR_BITWISE_OP, NFT_BITWISE_BOOL);
        uint32_t mlen = 0, xlen = 0;
        const void* mask = nftnl_expr_is_set(e, NFTNL_EXPR_BITWISE_MASK) ? nftnl_expr_get(e, NFTNL_EXPR_BITWISE_MASK, &mlen) : nullptr;
        const void* x = nftnl_expr_is_set(e, NFTNL_EXPR_BITWISE_XOR) ? nftnl_expr_get(e, NFTNL_EXPR_BITWISE_XOR, &xlen) : nullptr;
        if (!regs.Fits(s, len) || !regs.Fits(d, len)) {
          acc.Test(Tri::kMaybe, false);
          continue;
        }
        Regs out = regs;
        if (op == NFT_BITWISE_BOOL && mask && x && mlen >= len && xlen >= len) {
          for (uint32_t i = 0; i < len; ++i) {
            uint8_t m = static_cast<const uint8_t*>(mask)[i], xx = static_cast<const uint8_t*>(x)[i];
            out.v[d + i] = (regs.v[s + i] & m) ^ xx;
            out.hint[d + i] = 0;
            out.tag[d + i] = m == 0 ? Tag::kKnown : regs.tag[s + i];
          }
        } else {
          for (uint32_t i = 0; i < len; ++i) {
            out.tag[d + i] = regs.tag[s + i] == Tag::kKnown ? Tag::kUnknown : regs.tag[s + i];
            out.hint[d + i] = 0;
          }
        }
        regs = out;
        regs.PadWord(d, len);
      } else if (name == "byteorder") {
        size_t s = Regs::Offset(U32(e, NFTNL_EXPR_BYTEORDER_SREG)), d = Regs::Offset(U32(e, NFTNL_EXPR_BYTEORDER_DREG));
        uint32_t len = U32(e, NFTNL_EXPR_BYTEORDER_LEN), size = U32(e, NFTNL_EXPR_BYTEORDER_SIZE);
        if (!regs.Fits(s, len) || !regs.Fits(d, len) || (size != 2 && size != 4 && size != 8)) {
          acc.Test(Tri::kMaybe, false);
          continue;
        }
        Regs out = regs;
        for (uint32_t i = 0; i < len; ++i) {
          uint32_t word = i / size * size, pos = i % size;
          out.v[d + i] = regs.v[s + word + (size - 1 - pos)];
          out.tag[d + i] = regs.tag[s + word + (size - 1 - pos)];
          out.hint[d + i] = 0;
        }
        regs = out;
      } else if (name == "cmp") {
        uint32_t len = 0;
        const void* data = nftnl_expr_get(e, NFTNL_EXPR_CMP_DATA, &len);
        auto [t, src] = Decide(regs, Regs::Offset(U32(e, NFTNL_EXPR_CMP_SREG)), len, data, U32(e, NFTNL_EXPR_CMP_OP));
        acc.Test(t, src);
      } else if (name == "range") {
        uint32_t l1 = 0, l2 = 0;
        const void* from = nftnl_expr_get(e, NFTNL_EXPR_RANGE_FROM_DATA, &l1);
        const void* to = nftnl_expr_get(e, NFTNL_EXPR_RANGE_TO_DATA, &l2);
        if (l1 != l2 || !to) {
          acc.Test(Tri::kMaybe, false);
          continue;
        }
        auto [t, src] = Decide(regs, Regs::Offset(U32(e, NFTNL_EXPR_RANGE_SREG)), l1, from,
                               U32(e, NFTNL_EXPR_RANGE_OP), to);
        acc.Test(t, src);
      } else if (name == "lookup") {
        const char* set = nftnl_expr_get_str(e, NFTNL_EXPR_LOOKUP_SET);
        bool invert = U32(e, NFTNL_EXPR_LOOKUP_FLAGS) & NFT_LOOKUP_F_INV;
        bool is_map = nftnl_expr_is_set(e, NFTNL_EXPR_LOOKUP_DREG);
        size_t s = Regs::Offset(U32(e, NFTNL_EXPR_LOOKUP_SREG));
        uint32_t klen = set && sets_ ? sets_->KeyLen(family_, table_, set) : 0;
        if (!klen || !regs.Fits(s, klen)) {
          acc.Test(Tri::kMaybe, false);
          if (is_map) {
            if (U32(e, NFTNL_EXPR_LOOKUP_DREG) == NFT_REG_VERDICT) {
              terminal = true;
              res.action = A::kDrop;  // an unknown verdict: treat as a possible drop
              break;
            }
            regs.SetTag(Regs::Offset(U32(e, NFTNL_EXPR_LOOKUP_DREG)), 16, Tag::kUnknown);
          }
          continue;
        }
        Tag w = regs.Worst(s, klen);
        if (w == Tag::kSource) {
          // An ordinary source is in no set: a positive lookup misses, a map has no element.
          acc.Test(invert ? Tri::kYes : Tri::kNo, true);
          if (is_map) acc.Test(Tri::kNo, true);
          continue;
        }
        std::optional<SetHit> hit;
        if (w == Tag::kKnown) hit = sets_->Lookup(family_, table_, set, std::vector<uint8_t>(regs.v + s, regs.v + s + klen));
        if (!hit) {
          acc.Test(Tri::kMaybe, false);
          if (is_map && U32(e, NFTNL_EXPR_LOOKUP_DREG) == NFT_REG_VERDICT) {
            terminal = true;
            res.action = A::kDrop;
            break;
          }
          if (is_map) regs.SetTag(Regs::Offset(U32(e, NFTNL_EXPR_LOOKUP_DREG)), 16, Tag::kUnknown);
          continue;
        }
        if (!is_map) {
          acc.Test(FromBool(hit->found != invert), false);
          continue;
        }
        if (!hit->found) {
          acc.Test(Tri::kNo, false);
          continue;
        }
        if (U32(e, NFTNL_EXPR_LOOKUP_DREG) == NFT_REG_VERDICT) {
          terminal = true;
          SetVerdict(hit->verdict.value_or(NFT_CONTINUE), hit->chain, &res);
          break;
        }
        regs.SetKnown(Regs::Offset(U32(e, NFTNL_EXPR_LOOKUP_DREG)), hit->data.data(), hit->data.size());
      } else if (name == "immediate") {
        uint32_t dreg = U32(e, NFTNL_EXPR_IMM_DREG);
        if (dreg != NFT_REG_VERDICT) {
          uint32_t len = 0;
          const void* d = nftnl_expr_get(e, NFTNL_EXPR_IMM_DATA, &len);
          if (d) regs.SetKnown(Regs::Offset(dreg), d, len);
          continue;
        }
        const char* chain = nftnl_expr_is_set(e, NFTNL_EXPR_IMM_CHAIN) ? nftnl_expr_get_str(e, NFTNL_EXPR_IMM_CHAIN) : "";
        SetVerdict(static_cast<int32_t>(U32(e, NFTNL_EXPR_IMM_VERDICT)), chain ? chain : "", &res);
        terminal = true;
        break;
      } else if (name == "reject") {
        res.action = A::kReject;
        terminal = true;
        break;
      } else if (name == "nat") {
        uint32_t type = U32(e, NFTNL_EXPR_NAT_TYPE);
        terminal = true;
        if (type != NFT_NAT_DNAT) {
          res.action = A::kAccept;  // snat on input: the connection goes on
          break;
        }
        res.action = A::kDnat;
        if (nftnl_expr_is_set(e, NFTNL_EXPR_NAT_REG_ADDR_MIN)) {
          size_t s = Regs::Offset(U32(e, NFTNL_EXPR_NAT_REG_ADDR_MIN));
          size_t alen = st.flow->family == Family::kV4 ? 4 : 16;
          if (regs.Worst(s, alen) == Tag::kKnown) {
            Addr a{};
            std::memcpy(a.b.data(), regs.v + s, alen);
            res.dnat_addr = a;
          } else {
            acc.Test(Tri::kMaybe, false);
          }
        }
        if (nftnl_expr_is_set(e, NFTNL_EXPR_NAT_REG_PROTO_MIN)) {
          size_t s = Regs::Offset(U32(e, NFTNL_EXPR_NAT_REG_PROTO_MIN));
          if (regs.Worst(s, 2) == Tag::kKnown) {
            uint16_t p;
            std::memcpy(&p, regs.v + s, 2);
            res.dnat_port = ntohs(p);
          }
        }
        break;
      } else if (name == "redir") {
        terminal = true;
        res.action = A::kDnat;
        res.dnat_addr = st.flow->family == Family::kV4 ? [] {
          Addr a{};
          a.b[0] = 127;
          a.b[3] = 1;
          return a;
        }() : [] {
          Addr a{};
          a.b[15] = 1;
          return a;
        }();
        if (nftnl_expr_is_set(e, NFTNL_EXPR_REDIR_REG_PROTO_MIN)) {
          size_t s = Regs::Offset(U32(e, NFTNL_EXPR_REDIR_REG_PROTO_MIN));
          if (regs.Worst(s, 2) == Tag::kKnown) {
            uint16_t p;
            std::memcpy(&p, regs.v + s, 2);
            res.dnat_port = ntohs(p);
          }
        }
        break;
      } else if (name == "masq") {
        terminal = true;
        res.action = A::kAccept;
        break;
      } else if (name == "dynset") {
        // `update @meter { ip saddr limit rate over N }`: per-source state. A first connection
        // of a source is under any limit: a restriction of some sources when keyed by the source.
        const nftnl_expr* inner = nftnl_expr_is_set(e, NFTNL_EXPR_DYNSET_EXPR)
                                      ? static_cast<const nftnl_expr*>(nftnl_expr_get(e, NFTNL_EXPR_DYNSET_EXPR, nullptr))
                                      : nullptr;
        bool over = false;
        if (inner && IsRateLimit(inner, &over)) {
          size_t s = Regs::Offset(U32(e, NFTNL_EXPR_DYNSET_SREG_KEY));
          bool per_source = regs.Worst(s, 4) == Tag::kSource || st.flow->saddr.has_value();
          if (per_source) acc.Test(over ? Tri::kNo : Tri::kYes, true);
          else acc.Test(Tri::kMaybe, false);
        }
      } else if (name == "limit" || name == "quota" || name == "connlimit" || name == "numgen" ||
                 name == "hash" || name == "socket" || name == "osf" || name == "xfrm" || name == "inner" ||
                 name == "match" || name == "tunnel" || name == "rt") {
        if (name == "numgen" || name == "hash" || name == "socket" || name == "osf" || name == "xfrm" ||
            name == "rt" || name == "tunnel") {
          // These load values: unknown bytes, decided (or not) by what compares them.
          uint16_t attr = name == "numgen" ? NFTNL_EXPR_NG_DREG : name == "hash" ? NFTNL_EXPR_HASH_DREG
                          : name == "socket" ? NFTNL_EXPR_SOCKET_DREG : name == "osf" ? NFTNL_EXPR_OSF_DREG
                          : name == "rt" ? NFTNL_EXPR_RT_DREG : 0;
          if (attr && nftnl_expr_is_set(e, attr)) regs.SetTag(Regs::Offset(U32(e, attr)), 16, Tag::kUnknown);
          else acc.Test(Tri::kMaybe, false);
        } else {
          acc.Test(Tri::kMaybe, false);
        }
      } else if (name == "exthdr") {
        if (nftnl_expr_is_set(e, NFTNL_EXPR_EXTHDR_SREG)) continue;  // option mangling
        uint32_t op = U32(e, NFTNL_EXPR_EXTHDR_OP, NFT_EXTHDR_OP_IPV6);
        bool present = U32(e, NFTNL_EXPR_EXTHDR_FLAGS) & NFT_EXTHDR_F_PRESENT;
        size_t d = Regs::Offset(U32(e, NFTNL_EXPR_EXTHDR_DREG));
        if (op == NFT_EXTHDR_OP_TCPOPT) {
          regs.SetTag(d, std::max<uint32_t>(1, U32(e, NFTNL_EXPR_EXTHDR_LEN)), Tag::kUnknown);
        } else if (present) {
          uint8_t zero = 0;  // no IPv6 extension header, no IPv4 option on an ordinary SYN
          regs.SetKnown(d, &zero, 1);
        } else {
          acc.Test(Tri::kNo, false);  // the header is absent: the kernel breaks
        }
      } else if (name == "queue" || name == "tproxy" || name == "synproxy" || name == "target") {
        terminal = true;
        res.action = A::kQueue;
        if (name == "target") {
          const char* t = nftnl_expr_get_str(e, NFTNL_EXPR_TG_NAME);
          std::string tn = t ? t : "";
          if (tn == "LOG" || tn == "NFLOG" || tn == "MARK" || tn == "CONNMARK" || tn == "CT" || tn == "TCPMSS" ||
              tn == "CHECKSUM" || tn == "SNAT" || tn == "MASQUERADE") {
            terminal = false;
            res.action = A::kContinue;
            continue;
          }
          if (tn == "ACCEPT") res.action = A::kAccept;
          else if (tn == "DROP" || tn == "REJECT") res.action = A::kReject;
        }
        break;
      } else if (name == "objref") {
        if (nftnl_expr_is_set(e, NFTNL_EXPR_OBJREF_SET_SREG)) {
          // `counter name ip saddr map @m`: no element for the key, and the kernel breaks.
          const char* set = nftnl_expr_get_str(e, NFTNL_EXPR_OBJREF_SET_NAME);
          size_t s = Regs::Offset(U32(e, NFTNL_EXPR_OBJREF_SET_SREG));
          uint32_t klen = set && sets_ ? sets_->KeyLen(family_, table_, set) : 0;
          Tag w = klen && regs.Fits(s, klen) ? regs.Worst(s, klen) : Tag::kUnknown;
          if (w == Tag::kSource) {
            acc.Test(Tri::kNo, true);
          } else if (w == Tag::kKnown) {
            auto hit = sets_->Lookup(family_, table_, set, std::vector<uint8_t>(regs.v + s, regs.v + s + klen));
            if (!hit) acc.Test(Tri::kMaybe, false);
            else if (!hit->found) acc.Test(Tri::kNo, false);
            else acc.Test(Tri::kMaybe, false);  // the object's state (a quota, a limit) decides
          } else {
            acc.Test(Tri::kMaybe, false);
          }
          continue;
        }
        uint32_t type = U32(e, NFTNL_EXPR_OBJREF_IMM_TYPE);
        if (type == NFT_OBJECT_LIMIT || type == NFT_OBJECT_QUOTA) acc.Test(Tri::kMaybe, false);
        if (type == NFT_OBJECT_SYNPROXY) {
          terminal = true;
          res.action = A::kQueue;
          break;
        }
      }
      // counter, log, notrack, last, flow_offload, dup, fwd...: statements that do not decide.
    }
    nftnl_expr_iter_destroy(it);
    if (acc.stop) {
      res.match = Tri::kNo;
      res.action = terminal ? res.action : A::kContinue;
      return res;
    }
    if (!terminal) res.action = A::kContinue;
    res.match = acc.ordinary;
    res.source_dependent = acc.source_dependent;
    if (res.match == Tri::kNo && acc.others == Tri::kNo) res.source_dependent = false;
    return res;
  }

 private:
  static void SetVerdict(int32_t v, const std::string& chain, RuleResult* res) {
    using A = RuleResult::Action;
    switch (v) {
      case NF_ACCEPT: res->action = A::kAccept; break;
      case NF_DROP: res->action = A::kDrop; break;
      case NFT_RETURN: res->action = A::kReturn; break;
      case NFT_CONTINUE:
      case NFT_BREAK: res->action = A::kContinue; break;
      case NFT_JUMP: res->action = A::kJump; res->target = chain; break;
      case NFT_GOTO: res->action = A::kGoto; res->target = chain; break;
      default: res->action = A::kQueue; break;  // queue, stolen
    }
  }

  const nftnl_rule* r_;
  uint32_t family_;
  std::string table_;
  std::shared_ptr<NftSets> sets_;
};

Hook ToHook(uint32_t family, uint32_t hook, bool* ok) {
  *ok = true;
  if (family == NFPROTO_NETDEV) {
    if (hook == NF_NETDEV_INGRESS) return Hook::kIngress;
    *ok = false;
    return Hook::kIngress;
  }
  switch (hook) {
    case NF_INET_PRE_ROUTING: return Hook::kPrerouting;
    case NF_INET_LOCAL_IN: return Hook::kInput;
    case NF_INET_FORWARD: return Hook::kForward;
    case NF_INET_INGRESS: return Hook::kIngress;
    default: *ok = false; return Hook::kInput;
  }
}

}  // namespace

void AddNftTables(const std::vector<NftChainIn>& chains, std::shared_ptr<NftSets> sets, Topology* topo) {
  std::map<std::pair<uint32_t, std::string>, size_t> index;
  for (const auto& c : chains) {
    auto key = std::make_pair(c.family, c.table);
    auto it = index.find(key);
    if (it == index.end()) {
      Table t;
      t.dialect = Dialect::kNft;
      t.family = NftFamilyName(c.family);
      t.name = c.table;
      topo->tables.push_back(std::move(t));
      it = index.emplace(key, topo->tables.size() - 1).first;
    }
    Table& t = topo->tables[it->second];
    Chain& ch = t.chains[c.name];
    ch.name = c.name;
    for (const nftnl_rule* r : c.rules) ch.rules.push_back(std::make_unique<NftRule>(r, c.family, c.table, sets));
    if (c.base) {
      bool ok = false;
      Hook h = ToHook(c.family, c.hook, &ok);
      if (!ok) continue;
      BaseChain b;
      b.chain = c.name;
      b.hook = h;
      b.priority = c.priority;
      b.nat = c.type == "nat";
      b.policy_drop = c.policy_drop;
      b.devices = c.devices;
      t.bases.push_back(b);
    }
  }
}

}  // namespace mw::analysis
