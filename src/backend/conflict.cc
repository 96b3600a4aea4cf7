#include "backend/conflict.h"

#include <arpa/inet.h>
#include <libnftnl/expr.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/if_packet.h>
#include <netinet/in.h>

#include <cstring>

namespace mw::nft {
namespace {

enum class Tri { kNo, kYes, kMaybe };

/// The outcome of running the packet through a chain.
enum class Outcome { kContinue, kAccept, kDrop, kMaybeDrop, kMaybeAccept, kReturn };

struct Reg {
  bool known = false;
  std::vector<uint8_t> bytes;
  /// Unknown, except that it is not the loopback interface (name "lo", index 1, type 772).
  bool not_loopback = false;
};

bool IsLoopbackValue(const void* data, uint32_t len) {
  auto* b = static_cast<const uint8_t*>(data);
  if (len >= 3 && b[0] == 'l' && b[1] == 'o' && b[2] == 0) return true;  // iifname "lo"
  if (len == 4) {
    uint32_t v;
    std::memcpy(&v, data, 4);
    return v == 1;  // iif lo: index 1 in every namespace
  }
  if (len == 2) {
    uint16_t v;
    std::memcpy(&v, data, 2);
    return v == 772;  // iiftype loopback (ARPHRD_LOOPBACK)
  }
  return false;
}

struct Packet {
  uint16_t port;
  Family family;
};

const char* FamilyWord(uint32_t f) {
  switch (f) {
    case NFPROTO_IPV4: return "ip";
    case NFPROTO_IPV6: return "ip6";
    case NFPROTO_INET: return "inet";
    default: return "?";
  }
}

std::vector<uint8_t> Bytes(const void* p, size_t n) {
  auto* b = static_cast<const uint8_t*>(p);
  return std::vector<uint8_t>(b, b + n);
}

class Evaluator {
 public:
  Evaluator(const std::vector<ChainInfo>& chains, const Packet& pkt, const SetLookup& lookup)
      : chains_(chains), pkt_(pkt), lookup_(lookup) {}

  /// Runs a chain; `why` gets the rule or policy that decided a drop.
  Outcome RunChain(const ChainInfo& c, int depth, std::string* why) {
    if (depth > 16) return Outcome::kMaybeDrop;
    bool maybe_dropped = false, maybe_accepted = false;
    std::string maybe_why;
    for (size_t i = 0; i < c.rules.size(); ++i) {
      const nftnl_rule* r = c.rules[i];
      std::string where = "rule " + std::to_string(i + 1) + " of chain " + c.name;
      std::string sub;
      Outcome o = r ? RunRule(c, r, depth, &sub) : Outcome::kMaybeDrop;
      if (!r) sub = where + " (an expression mailward cannot read)";
      switch (o) {
        case Outcome::kContinue: break;
        case Outcome::kMaybeAccept: maybe_accepted = true; break;
        case Outcome::kMaybeDrop:
          if (!maybe_dropped) maybe_why = sub.empty() ? where : sub;
          maybe_dropped = true;
          break;
        case Outcome::kAccept:
          if (maybe_dropped) {
            *why = maybe_why;
            return Outcome::kMaybeDrop;
          }
          return Outcome::kAccept;
        case Outcome::kDrop:
          *why = sub.empty() ? where : sub;
          return maybe_accepted ? Outcome::kMaybeDrop : Outcome::kDrop;
        case Outcome::kReturn:
          if (maybe_dropped) {
            *why = maybe_why;
            return Outcome::kMaybeDrop;
          }
          return maybe_accepted ? Outcome::kMaybeAccept : Outcome::kReturn;
      }
    }
    if (maybe_dropped) {
      *why = maybe_why;
      return Outcome::kMaybeDrop;
    }
    return maybe_accepted ? Outcome::kMaybeAccept : Outcome::kContinue;
  }

 private:
  const ChainInfo* Find(uint32_t family, const std::string& table, const std::string& name) {
    for (const auto& c : chains_)
      if (c.family == family && c.table == table && c.name == name) return &c;
    return nullptr;
  }

  Outcome RunRule(const ChainInfo& c, const nftnl_rule* r, int depth, std::string* why) {
    Reg regs[32];
    Reg verdict_reg;
    bool maybe = false;
    Outcome result = Outcome::kContinue;
    nftnl_expr_iter* it = nftnl_expr_iter_create(r);
    auto reg_index = [](uint32_t reg) -> int {
      if (reg >= NFT_REG32_00) return static_cast<int>(reg - NFT_REG32_00) % 16 + 8;
      return static_cast<int>(reg) % 32;
    };
    auto done = [&](Outcome o) {
      nftnl_expr_iter_destroy(it);
      return o;
    };
    while (nftnl_expr* e = nftnl_expr_iter_next(it)) {
      std::string name = nftnl_expr_get_str(e, NFTNL_EXPR_NAME);
      Tri t = Tri::kYes;
      if (name == "meta") {
        if (!nftnl_expr_is_set(e, NFTNL_EXPR_META_DREG)) continue;  // meta set: a statement
        Reg& d = regs[reg_index(nftnl_expr_get_u32(e, NFTNL_EXPR_META_DREG))];
        uint32_t key = nftnl_expr_get_u32(e, NFTNL_EXPR_META_KEY);
        d = Reg{};
        if (key == NFT_META_L4PROTO) {
          d = {true, {IPPROTO_TCP}};
        } else if (key == NFT_META_NFPROTO) {
          d = {true, {static_cast<uint8_t>(pkt_.family == Family::kV4 ? NFPROTO_IPV4 : NFPROTO_IPV6)}};
        } else if (key == NFT_META_PROTOCOL) {
          uint16_t p = htons(pkt_.family == Family::kV4 ? 0x0800 : 0x86dd);
          d = {true, Bytes(&p, 2)};
        } else if (key == NFT_META_PKTTYPE) {
          d = {true, {PACKET_HOST}};
        } else if (key == NFT_META_IIFNAME || key == NFT_META_IIF || key == NFT_META_IIFTYPE) {
          d.not_loopback = true;
        }
      } else if (name == "payload") {
        if (!nftnl_expr_is_set(e, NFTNL_EXPR_PAYLOAD_DREG)) continue;  // payload set
        Reg& d = regs[reg_index(nftnl_expr_get_u32(e, NFTNL_EXPR_PAYLOAD_DREG))];
        uint32_t base = nftnl_expr_get_u32(e, NFTNL_EXPR_PAYLOAD_BASE);
        uint32_t off = nftnl_expr_get_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET);
        uint32_t len = nftnl_expr_get_u32(e, NFTNL_EXPR_PAYLOAD_LEN);
        d = Reg{};
        if (base == NFT_PAYLOAD_TRANSPORT_HEADER && off == 2 && len == 2) {
          uint16_t p = htons(pkt_.port);
          d = {true, Bytes(&p, 2)};
        } else if (base == NFT_PAYLOAD_TRANSPORT_HEADER && off == 13 && len == 1) {
          d = {true, {0x02}};  // SYN
        } else if (base == NFT_PAYLOAD_NETWORK_HEADER && pkt_.family == Family::kV4 && off == 9 && len == 1) {
          d = {true, {IPPROTO_TCP}};
        } else if (base == NFT_PAYLOAD_NETWORK_HEADER && pkt_.family == Family::kV6 && off == 6 && len == 1) {
          d = {true, {IPPROTO_TCP}};
        }
      } else if (name == "ct") {
        if (!nftnl_expr_is_set(e, NFTNL_EXPR_CT_DREG)) continue;  // ct set
        Reg& d = regs[reg_index(nftnl_expr_get_u32(e, NFTNL_EXPR_CT_DREG))];
        d = Reg{};
        if (nftnl_expr_get_u32(e, NFTNL_EXPR_CT_KEY) == NFT_CT_STATE) {
          uint32_t s = NF_CT_STATE_BIT(IP_CT_NEW);
          d = {true, Bytes(&s, 4)};
        }
      } else if (name == "bitwise") {
        Reg& s = regs[reg_index(nftnl_expr_get_u32(e, NFTNL_EXPR_BITWISE_SREG))];
        Reg out;
        uint32_t mlen = 0, xlen = 0;
        const void* mask = nftnl_expr_get(e, NFTNL_EXPR_BITWISE_MASK, &mlen);
        const void* x = nftnl_expr_get(e, NFTNL_EXPR_BITWISE_XOR, &xlen);
        bool boolean = !nftnl_expr_is_set(e, NFTNL_EXPR_BITWISE_OP) ||
                       nftnl_expr_get_u32(e, NFTNL_EXPR_BITWISE_OP) == NFT_BITWISE_BOOL;
        if (s.known && boolean && mask && x && mlen == xlen && mlen <= s.bytes.size()) {
          out.known = true;
          out.bytes.resize(mlen);
          for (uint32_t i = 0; i < mlen; ++i)
            out.bytes[i] = (s.bytes[i] & static_cast<const uint8_t*>(mask)[i]) ^ static_cast<const uint8_t*>(x)[i];
        }
        regs[reg_index(nftnl_expr_get_u32(e, NFTNL_EXPR_BITWISE_DREG))] = out;
      } else if (name == "cmp") {
        Reg& s = regs[reg_index(nftnl_expr_get_u32(e, NFTNL_EXPR_CMP_SREG))];
        uint32_t len = 0;
        const void* data = nftnl_expr_get(e, NFTNL_EXPR_CMP_DATA, &len);
        uint32_t op = nftnl_expr_get_u32(e, NFTNL_EXPR_CMP_OP);
        if (s.not_loopback && data && IsLoopbackValue(data, len) && (op == NFT_CMP_EQ || op == NFT_CMP_NEQ)) {
          t = op == NFT_CMP_EQ ? Tri::kNo : Tri::kYes;
        } else if (!s.known || !data || len > s.bytes.size()) {
          t = Tri::kMaybe;
        } else {
          int c = std::memcmp(s.bytes.data(), data, len);
          // Multi-byte values compare as big-endian (ports, addresses); host-order values (ct
          // state) are only compared for equality by nft.
          switch (nftnl_expr_get_u32(e, NFTNL_EXPR_CMP_OP)) {
            case NFT_CMP_EQ: t = c == 0 ? Tri::kYes : Tri::kNo; break;
            case NFT_CMP_NEQ: t = c != 0 ? Tri::kYes : Tri::kNo; break;
            case NFT_CMP_LT: t = c < 0 ? Tri::kYes : Tri::kNo; break;
            case NFT_CMP_LTE: t = c <= 0 ? Tri::kYes : Tri::kNo; break;
            case NFT_CMP_GT: t = c > 0 ? Tri::kYes : Tri::kNo; break;
            case NFT_CMP_GTE: t = c >= 0 ? Tri::kYes : Tri::kNo; break;
            default: t = Tri::kMaybe;
          }
        }
      } else if (name == "range") {
        Reg& s = regs[reg_index(nftnl_expr_get_u32(e, NFTNL_EXPR_RANGE_SREG))];
        uint32_t l1 = 0, l2 = 0;
        const void* from = nftnl_expr_get(e, NFTNL_EXPR_RANGE_FROM_DATA, &l1);
        const void* to = nftnl_expr_get(e, NFTNL_EXPR_RANGE_TO_DATA, &l2);
        if (!s.known || !from || !to || l1 != l2 || l1 > s.bytes.size()) {
          t = Tri::kMaybe;
        } else {
          bool in = std::memcmp(s.bytes.data(), from, l1) >= 0 && std::memcmp(s.bytes.data(), to, l1) <= 0;
          bool eq = nftnl_expr_get_u32(e, NFTNL_EXPR_RANGE_OP) == NFT_RANGE_EQ;
          t = (in == eq) ? Tri::kYes : Tri::kNo;
        }
      } else if (name == "lookup") {
        if (nftnl_expr_is_set(e, NFTNL_EXPR_LOOKUP_DREG)) {  // a map: the data is unknown
          regs[reg_index(nftnl_expr_get_u32(e, NFTNL_EXPR_LOOKUP_DREG))] = Reg{};
          t = Tri::kMaybe;
        } else {
          Reg& s = regs[reg_index(nftnl_expr_get_u32(e, NFTNL_EXPR_LOOKUP_SREG))];
          const char* set = nftnl_expr_get_str(e, NFTNL_EXPR_LOOKUP_SET);
          std::optional<bool> in;
          if (s.known && set) in = lookup_(c.family, c.table, set, s.bytes);
          bool invert = nftnl_expr_is_set(e, NFTNL_EXPR_LOOKUP_FLAGS) &&
                        (nftnl_expr_get_u32(e, NFTNL_EXPR_LOOKUP_FLAGS) & NFT_LOOKUP_F_INV);
          if (!in) t = Tri::kMaybe;
          else t = (*in != invert) ? Tri::kYes : Tri::kNo;
        }
      } else if (name == "immediate") {
        if (nftnl_expr_get_u32(e, NFTNL_EXPR_IMM_DREG) != NFT_REG_VERDICT) {
          uint32_t len = 0;
          const void* d = nftnl_expr_get(e, NFTNL_EXPR_IMM_DATA, &len);
          regs[reg_index(nftnl_expr_get_u32(e, NFTNL_EXPR_IMM_DREG))] = d ? Reg{true, Bytes(d, len)} : Reg{};
          continue;
        }
        int v = static_cast<int>(nftnl_expr_get_u32(e, NFTNL_EXPR_IMM_VERDICT));
        if (v == NF_ACCEPT) result = Outcome::kAccept;
        else if (v == NF_DROP) result = Outcome::kDrop;
        else if (v == NFT_RETURN) result = Outcome::kReturn;
        else if (v == NFT_CONTINUE) result = Outcome::kContinue;
        else if (v == NFT_JUMP || v == NFT_GOTO) {
          const char* target = nftnl_expr_get_str(e, NFTNL_EXPR_IMM_CHAIN);
          const ChainInfo* tc = target ? Find(c.family, c.table, target) : nullptr;
          std::string sub;
          Outcome o = tc ? RunChain(*tc, depth + 1, &sub) : Outcome::kMaybeDrop;
          if (o == Outcome::kReturn || o == Outcome::kContinue) o = v == NFT_GOTO ? Outcome::kReturn : Outcome::kContinue;
          if (!sub.empty()) *why = sub;
          result = o;
          if (maybe && (o == Outcome::kDrop || o == Outcome::kAccept || o == Outcome::kMaybeAccept)) {
            nftnl_expr_iter_destroy(it);
            return o == Outcome::kDrop ? Outcome::kMaybeDrop : Outcome::kMaybeAccept;
          }
        } else {
          result = Outcome::kMaybeDrop;  // queue, stolen...
        }
        break;
      } else if (name == "reject") {
        result = Outcome::kDrop;
        break;
      } else if (name == "counter" || name == "log" || name == "notrack" || name == "objref" ||
                 name == "dynset" || name == "last") {
        continue;  // statements that do not decide
      } else if (name == "queue" || name == "target" || name == "synproxy" || name == "tproxy") {
        result = Outcome::kMaybeDrop;
        break;
      } else {
        // limit, quota, connlimit, match (xtables), fib, socket, numgen, hash... undecidable here.
        t = Tri::kMaybe;
      }
      if (t == Tri::kNo) return done(Outcome::kContinue);
      if (t == Tri::kMaybe) maybe = true;
    }
    nftnl_expr_iter_destroy(it);
    if (result == Outcome::kDrop || result == Outcome::kMaybeDrop) return maybe ? Outcome::kMaybeDrop : result;
    if (result == Outcome::kAccept) return maybe ? Outcome::kMaybeAccept : Outcome::kAccept;
    return result;
  }

  const std::vector<ChainInfo>& chains_;
  Packet pkt_;
  const SetLookup& lookup_;
};

}  // namespace

std::vector<Conflict> FindConflicts(const std::vector<ChainInfo>& chains, uint16_t port, Family family,
                                    const SetLookup& lookup) {
  std::vector<Conflict> out;
  uint32_t want = family == Family::kV4 ? NFPROTO_IPV4 : NFPROTO_IPV6;
  for (const auto& c : chains) {
    if (!c.base) continue;
    if (c.family != want && c.family != NFPROTO_INET) continue;
    if (c.hook != NF_INET_PRE_ROUTING && c.hook != NF_INET_LOCAL_IN) continue;
    Evaluator ev(chains, Packet{port, family}, lookup);
    std::string why;
    Outcome o = ev.RunChain(c, 0, &why);
    std::string where = std::string("table ") + FamilyWord(c.family) + " " + c.table + " chain " + c.name;
    if (o == Outcome::kDrop) {
      out.push_back({port, FamilyName(family), where, "blocks", why.empty() ? "a rule drops it" : why + " drops it"});
    } else if (o == Outcome::kMaybeDrop) {
      out.push_back({port, FamilyName(family), where, "may block",
                     (why.empty() ? std::string("a rule") : why) + " may drop it (mailward cannot evaluate every match)"});
    } else if (o == Outcome::kMaybeAccept && c.policy == NF_DROP) {
      out.push_back({port, FamilyName(family), where, "may block",
                     "the chain's policy is drop and only rules mailward cannot fully evaluate accept it"});
    } else if ((o == Outcome::kContinue || o == Outcome::kReturn) && c.policy == NF_DROP) {
      out.push_back({port, FamilyName(family), where, "blocks", "the chain's policy is drop and no rule accepts it"});
    }
  }
  return out;
}

}  // namespace mw::nft
