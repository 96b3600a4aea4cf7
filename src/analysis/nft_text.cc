// Renders nftables rules read over netlink back into nft syntax ("tcp dport 993 reject"), for
// paths, conflicts and plans. Covers what firewalls write (payload, meta, ct, fib matches, sets,
// maps, verdicts, nat, the common statements); anything else is shown in libnftnl's notation.
#include <arpa/inet.h>
#include <cstdio>
#include <libnftnl/expr.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>

#include <cstdlib>
#include <cstring>
#include <map>

#include "analysis/nft_eval.h"

namespace mw::analysis {
namespace {

enum class Kind { kRaw, kPort, kAddr4, kAddr6, kProto, kNfproto, kIfname, kCtState, kCtStatus, kAddrType, kU32,
                  kPktType, kPresent, kNum, kBe16, kTcpFlags };

struct Lhs {
  std::string text;
  Kind kind = Kind::kRaw;
  int prefix = -1;  // after a bitwise mask of an address
  std::vector<uint8_t> mask;  // ct state/status: the bits tested
};

size_t Off(uint32_t reg) { return reg <= NFT_REG_4 ? reg * 16 : (reg - NFT_REG32_00 + 4) * 4; }
uint32_t U32(const nftnl_expr* e, uint16_t a, uint32_t d = 0) { return nftnl_expr_is_set(e, a) ? nftnl_expr_get_u32(e, a) : d; }

bool AllZeroBytes(const uint8_t* b, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (b[i]) return false;
  return true;
}

std::string Hex(const uint8_t* b, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s = "0x";
  for (size_t i = 0; i < n; ++i) {
    s += d[b[i] >> 4];
    s += d[b[i] & 15];
  }
  return s;
}

std::string Value(const Lhs& l, const uint8_t* b, uint32_t len) {
  switch (l.kind) {
    case Kind::kPort:
      if (len >= 2) return std::to_string((b[0] << 8) | b[1]);
      break;
    case Kind::kAddr4:
    case Kind::kAddr6: {
      char buf[INET6_ADDRSTRLEN];
      uint8_t full[16] = {};
      std::memcpy(full, b, std::min<uint32_t>(len, 16));
      if (inet_ntop(l.kind == Kind::kAddr4 ? AF_INET : AF_INET6, full, buf, sizeof buf)) {
        std::string s = buf;
        size_t bits = (l.kind == Kind::kAddr4 ? 32 : 128);
        if (l.prefix >= 0) s += "/" + std::to_string(l.prefix);
        else if (len * 8 < bits) s += "/" + std::to_string(len * 8);
        return s;
      }
      break;
    }
    case Kind::kProto:
      if (len >= 1) {
        switch (b[0]) {
          case IPPROTO_TCP: return "tcp";
          case IPPROTO_UDP: return "udp";
          case IPPROTO_ICMP: return "icmp";
          case IPPROTO_ICMPV6: return "ipv6-icmp";
          default: return std::to_string(b[0]);
        }
      }
      break;
    case Kind::kNfproto:
      if (len >= 1) return b[0] == NFPROTO_IPV4 ? "ipv4" : b[0] == NFPROTO_IPV6 ? "ipv6" : std::to_string(b[0]);
      break;
    case Kind::kIfname:
      return "\"" + std::string(reinterpret_cast<const char*>(b), strnlen(reinterpret_cast<const char*>(b), len)) +
             (len < 16 && b[len - 1] != 0 ? "*" : "") + "\"";
    case Kind::kCtState:
    case Kind::kCtStatus: {
      uint32_t v = 0;
      std::memcpy(&v, b, std::min<uint32_t>(len, 4));
      static const std::pair<uint32_t, const char*> kStates[] = {
          {NF_CT_STATE_INVALID_BIT, "invalid"}, {NF_CT_STATE_BIT(IP_CT_ESTABLISHED), "established"},
          {NF_CT_STATE_BIT(IP_CT_RELATED), "related"}, {NF_CT_STATE_BIT(IP_CT_NEW), "new"},
          {NF_CT_STATE_UNTRACKED_BIT, "untracked"}};
      static const std::pair<uint32_t, const char*> kStatus[] = {
          {IPS_EXPECTED, "expected"}, {IPS_SEEN_REPLY, "seen-reply"}, {IPS_ASSURED, "assured"},
          {IPS_CONFIRMED, "confirmed"}, {IPS_SRC_NAT, "snat"}, {IPS_DST_NAT, "dnat"}, {IPS_DYING, "dying"}};
      const auto* table = l.kind == Kind::kCtState ? kStates : kStatus;
      size_t n = l.kind == Kind::kCtState ? std::size(kStates) : std::size(kStatus);
      std::string s;
      for (size_t i = 0; i < n; ++i)
        if (v & table[i].first) s += (s.empty() ? "" : ",") + std::string(table[i].second);
      return s.empty() ? "0" : s;
    }
    case Kind::kAddrType: {
      uint32_t v = 0;
      std::memcpy(&v, b, std::min<uint32_t>(len, 4));
      static const char* kNames[] = {"unspec", "unicast", "local", "broadcast", "anycast", "multicast",
                                     "blackhole", "unreachable", "prohibit"};
      return v < 9 ? kNames[v] : std::to_string(v);
    }
    case Kind::kU32: {
      uint32_t v = 0;
      std::memcpy(&v, b, std::min<uint32_t>(len, 4));
      char buf[16];
      std::snprintf(buf, sizeof buf, "0x%08x", v);
      return buf;
    }
    case Kind::kPktType:
      if (len >= 1) return b[0] == 0 ? "host" : b[0] == 1 ? "broadcast" : b[0] == 2 ? "multicast" : "other";
      break;
    case Kind::kPresent:
      return len >= 1 && b[0] ? "exists" : "missing";
    case Kind::kNum: {  // a host-endian number the kernel computed (numgen, hash, rt tcpmss...)
      uint32_t v = 0;
      std::memcpy(&v, b, std::min<uint32_t>(len, 4));
      return std::to_string(v);
    }
    case Kind::kBe16:  // a big-endian field of a header or option (tcp option maxseg size)
      if (len == 1) return std::to_string(b[0]);
      if (len == 2) return std::to_string((b[0] << 8) | b[1]);
      if (len == 4) return std::to_string(uint32_t{b[0]} << 24 | uint32_t{b[1]} << 16 | uint32_t{b[2]} << 8 | b[3]);
      break;
    case Kind::kTcpFlags:
      if (len >= 1) {
        static const char* kFlags[] = {"fin", "syn", "rst", "psh", "ack", "urg", "ecn", "cwr"};
        std::string out;
        for (int i = 0; i < 8; ++i)
          if (b[0] & (1 << i)) out += (out.empty() ? "" : "|") + std::string(kFlags[i]);
        return out.empty() ? "0x0" : out;
      }
      break;
    case Kind::kRaw:
      break;
  }
  return Hex(b, len);
}

std::string UnitName(uint64_t seconds) {
  switch (seconds) {
    case 1: return "second";
    case 60: return "minute";
    case 3600: return "hour";
    case 86400: return "day";
    case 604800: return "week";
  }
  return std::to_string(seconds) + "s";
}

const char* CmpOp(uint32_t op) {
  switch (op) {
    case NFT_CMP_EQ: return "";
    case NFT_CMP_NEQ: return "!= ";
    case NFT_CMP_LT: return "< ";
    case NFT_CMP_LTE: return "<= ";
    case NFT_CMP_GT: return "> ";
    case NFT_CMP_GTE: return ">= ";
  }
  return "? ";
}

Lhs MetaLhs(uint32_t key) {
  switch (key) {
    case NFT_META_L4PROTO: return {"meta l4proto", Kind::kProto};
    case NFT_META_NFPROTO: return {"meta nfproto", Kind::kNfproto};
    case NFT_META_PROTOCOL: return {"meta protocol", Kind::kRaw};
    case NFT_META_IIFNAME: return {"iifname", Kind::kIfname};
    case NFT_META_OIFNAME: return {"oifname", Kind::kIfname};
    case NFT_META_IIF: return {"iif", Kind::kU32};
    case NFT_META_OIF: return {"oif", Kind::kU32};
    case NFT_META_MARK: return {"meta mark", Kind::kU32};
    case NFT_META_PKTTYPE: return {"meta pkttype", Kind::kPktType};
    case NFT_META_IIFTYPE: return {"iiftype", Kind::kRaw};
    case NFT_META_SKUID: return {"meta skuid", Kind::kU32};
    case NFT_META_SKGID: return {"meta skgid", Kind::kU32};
    default: return {"meta key " + std::to_string(key), Kind::kRaw};
  }
}

Lhs CtLhs(uint32_t key, bool has_dir, uint8_t dir) {
  std::string d = has_dir ? (dir == 1 /* IP_CT_DIR_REPLY */ ? "reply " : "original ") : "";
  switch (key) {
    case NFT_CT_STATE: return {"ct state", Kind::kCtState};
    case NFT_CT_STATUS: return {"ct status", Kind::kCtStatus};
    case NFT_CT_MARK: return {"ct mark", Kind::kU32};
    case NFT_CT_DIRECTION: return {"ct direction", Kind::kRaw};
    case NFT_CT_PROTO_DST: return {"ct " + d + "proto-dst", Kind::kPort};
    case NFT_CT_PROTO_SRC: return {"ct " + d + "proto-src", Kind::kPort};
    case NFT_CT_SRC_IP: return {"ct " + d + "ip saddr", Kind::kAddr4};
    case NFT_CT_DST_IP: return {"ct " + d + "ip daddr", Kind::kAddr4};
    case NFT_CT_SRC_IP6: return {"ct " + d + "ip6 saddr", Kind::kAddr6};
    case NFT_CT_DST_IP6: return {"ct " + d + "ip6 daddr", Kind::kAddr6};
    default: return {"ct key " + std::to_string(key), Kind::kRaw};
  }
}

Lhs PayloadLhs(uint32_t family_hint, uint32_t base, uint32_t off, uint32_t len, bool v6_context) {
  if (base == NFT_PAYLOAD_TRANSPORT_HEADER) {
    if (off == 2 && len == 2) return {"th dport", Kind::kPort};
    if (off == 0 && len == 2) return {"th sport", Kind::kPort};
    if (off == 13 && len == 1) return {"tcp flags", Kind::kTcpFlags};
  } else if (base == NFT_PAYLOAD_NETWORK_HEADER) {
    bool v6 = v6_context || family_hint == NFPROTO_IPV6;
    if (!v6) {
      if (off == 12 && len <= 4) return {"ip saddr", Kind::kAddr4};
      if (off == 16 && len <= 4) return {"ip daddr", Kind::kAddr4};
      if (off == 9 && len == 1) return {"ip protocol", Kind::kProto};
    } else {
      if (off == 8 && len <= 16) return {"ip6 saddr", Kind::kAddr6};
      if (off == 24 && len <= 16) return {"ip6 daddr", Kind::kAddr6};
      if (off == 6 && len == 1) return {"ip6 nexthdr", Kind::kProto};
    }
  }
  static const char* kBase[] = {"ll", "nh", "th", "ih"};
  return {std::string("@") + (base < 4 ? kBase[base] : "?") + "," + std::to_string(off * 8) + "," +
              std::to_string(len * 8),
          Kind::kRaw};
}

}  // namespace

std::string NftRuleText(const nftnl_rule* r) {
  uint32_t family = nftnl_rule_get_u32(r, NFTNL_RULE_FAMILY);
  std::map<size_t, Lhs> regs;
  std::map<size_t, std::vector<uint8_t>> imm;
  std::vector<std::string> parts;
  bool v6_context = family == NFPROTO_IPV6;
  std::string proto_word = "th";
  nftnl_expr_iter* it = nftnl_expr_iter_create(r);
  while (nftnl_expr* e = nftnl_expr_iter_next(it)) {
    std::string name = nftnl_expr_get_str(e, NFTNL_EXPR_NAME);
    if (name == "meta" && nftnl_expr_is_set(e, NFTNL_EXPR_META_DREG)) {
      regs[Off(U32(e, NFTNL_EXPR_META_DREG))] = MetaLhs(U32(e, NFTNL_EXPR_META_KEY));
    } else if (name == "payload" && nftnl_expr_is_set(e, NFTNL_EXPR_PAYLOAD_DREG)) {
      Lhs l = PayloadLhs(family, U32(e, NFTNL_EXPR_PAYLOAD_BASE), U32(e, NFTNL_EXPR_PAYLOAD_OFFSET),
                         U32(e, NFTNL_EXPR_PAYLOAD_LEN), v6_context);
      if (l.text.rfind("th ", 0) == 0) l.text = proto_word + l.text.substr(2);
      regs[Off(U32(e, NFTNL_EXPR_PAYLOAD_DREG))] = l;
    } else if (name == "ct" && nftnl_expr_is_set(e, NFTNL_EXPR_CT_DREG)) {
      bool has_dir = nftnl_expr_is_set(e, NFTNL_EXPR_CT_DIR);
      regs[Off(U32(e, NFTNL_EXPR_CT_DREG))] =
          CtLhs(U32(e, NFTNL_EXPR_CT_KEY), has_dir, has_dir ? nftnl_expr_get_u8(e, NFTNL_EXPR_CT_DIR) : 0);
    } else if (name == "fib") {
      uint32_t flags = U32(e, NFTNL_EXPR_FIB_FLAGS), result = U32(e, NFTNL_EXPR_FIB_RESULT);
      std::string t = "fib";
      std::string sep = " ";
      if (flags & NFTA_FIB_F_SADDR) { t += sep + "saddr"; sep = " . "; }
      if (flags & NFTA_FIB_F_DADDR) { t += sep + "daddr"; sep = " . "; }
      if (flags & NFTA_FIB_F_MARK) { t += sep + "mark"; sep = " . "; }
      if (flags & NFTA_FIB_F_IIF) { t += sep + "iif"; sep = " . "; }
      if (flags & NFTA_FIB_F_OIF) { t += sep + "oif"; sep = " . "; }
      Kind k = Kind::kU32;
      if (result == NFT_FIB_RESULT_ADDRTYPE) { t += " type"; k = Kind::kAddrType; }
      else if (result == NFT_FIB_RESULT_OIF) t += " oif";
      else if (result == NFT_FIB_RESULT_OIFNAME) { t += " oifname"; k = Kind::kIfname; }
      if (flags & NFTA_FIB_F_PRESENT) k = Kind::kPresent;
      regs[Off(U32(e, NFTNL_EXPR_FIB_DREG))] = {t, k};
    } else if (name == "exthdr" && nftnl_expr_is_set(e, NFTNL_EXPR_EXTHDR_DREG)) {
      uint32_t op = U32(e, NFTNL_EXPR_EXTHDR_OP);
      uint32_t type = nftnl_expr_is_set(e, NFTNL_EXPR_EXTHDR_TYPE) ? nftnl_expr_get_u8(e, NFTNL_EXPR_EXTHDR_TYPE) : 0;
      uint32_t off = U32(e, NFTNL_EXPR_EXTHDR_OFFSET), len = U32(e, NFTNL_EXPR_EXTHDR_LEN);
      bool present = U32(e, NFTNL_EXPR_EXTHDR_FLAGS) & NFT_EXTHDR_F_PRESENT;
      std::string t;
      if (op == NFT_EXTHDR_OP_TCPOPT) {
        static const std::map<uint32_t, const char*> kOpts = {{0, "eol"}, {1, "nop"}, {2, "maxseg"}, {3, "window"},
                                                             {4, "sack-perm"}, {5, "sack"}, {8, "timestamp"}};
        auto it = kOpts.find(type);
        t = "tcp option " + (it != kOpts.end() ? std::string(it->second) : std::to_string(type));
        if (!present) {
          if (type == 2 && off == 2 && len == 2) t += " size";
          else if (type == 3 && off == 2 && len == 1) t += " count";
          else if (off == 1 && len == 1) t += " length";
          else t += " @" + std::to_string(off * 8) + "," + std::to_string(len * 8);
        }
      } else {
        static const std::map<uint32_t, const char*> kHdrs = {{0, "hbh"}, {43, "rt"}, {44, "frag"}, {60, "dst"}, {135, "mh"}};
        auto it = kHdrs.find(type);
        t = std::string(op == NFT_EXTHDR_OP_IPV4 ? "ip option " : "exthdr ") +
            (it != kHdrs.end() && op != NFT_EXTHDR_OP_IPV4 ? std::string(it->second) : std::to_string(type));
        if (!present) t += " @" + std::to_string(off * 8) + "," + std::to_string(len * 8);
      }
      regs[Off(U32(e, NFTNL_EXPR_EXTHDR_DREG))] = {t, present ? Kind::kPresent : Kind::kBe16};
    } else if (name == "numgen") {
      std::string t = std::string("numgen ") + (U32(e, NFTNL_EXPR_NG_TYPE) == NFT_NG_RANDOM ? "random" : "inc") +
                      " mod " + std::to_string(U32(e, NFTNL_EXPR_NG_MODULUS));
      if (U32(e, NFTNL_EXPR_NG_OFFSET)) t += " offset " + std::to_string(U32(e, NFTNL_EXPR_NG_OFFSET));
      regs[Off(U32(e, NFTNL_EXPR_NG_DREG))] = {t, Kind::kNum};
    } else if (name == "hash") {
      size_t src = Off(U32(e, NFTNL_EXPR_HASH_SREG));
      std::string t = U32(e, NFTNL_EXPR_HASH_TYPE) == NFT_HASH_SYM ? "symhash"
                                                                  : "jhash " + (regs.count(src) ? regs[src].text : std::string("?"));
      t += " mod " + std::to_string(U32(e, NFTNL_EXPR_HASH_MODULUS));
      regs[Off(U32(e, NFTNL_EXPR_HASH_DREG))] = {t, Kind::kNum};
    } else if (name == "rt") {
      static const char* kKeys[] = {"classid", "ip nexthop", "ip6 nexthop", "mtu", "ipsec"};
      uint32_t k = U32(e, NFTNL_EXPR_RT_KEY);
      regs[Off(U32(e, NFTNL_EXPR_RT_DREG))] = {std::string("rt ") + (k < 5 ? kKeys[k] : "?"),
                                               k == NFT_RT_NEXTHOP4 ? Kind::kAddr4 : k == NFT_RT_NEXTHOP6 ? Kind::kAddr6 : Kind::kNum};
    } else if (name == "socket") {
      static const char* kKeys[] = {"transparent", "mark", "wildcard", "cgroupv2"};
      uint32_t k = U32(e, NFTNL_EXPR_SOCKET_KEY);
      regs[Off(U32(e, NFTNL_EXPR_SOCKET_DREG))] = {std::string("socket ") + (k < 4 ? kKeys[k] : "?"), Kind::kNum};
    } else if (name == "osf") {
      regs[Off(U32(e, NFTNL_EXPR_OSF_DREG))] = {"osf name", Kind::kRaw};
    } else if (name == "bitwise") {
      size_t s = Off(U32(e, NFTNL_EXPR_BITWISE_SREG)), d = Off(U32(e, NFTNL_EXPR_BITWISE_DREG));
      Lhs l = regs.count(s) ? regs[s] : Lhs{"?", Kind::kRaw};
      uint32_t mlen = 0;
      const void* mask = nftnl_expr_is_set(e, NFTNL_EXPR_BITWISE_MASK) ? nftnl_expr_get(e, NFTNL_EXPR_BITWISE_MASK, &mlen) : nullptr;
      if (mask && (l.kind == Kind::kAddr4 || l.kind == Kind::kAddr6)) {
        int bits = 0;
        auto* m = static_cast<const uint8_t*>(mask);
        for (uint32_t i = 0; i < mlen; ++i) bits += __builtin_popcount(m[i]);
        l.prefix = bits;
      }
      if (mask && l.kind != Kind::kAddr4 && l.kind != Kind::kAddr6) {
        auto* m = static_cast<const uint8_t*>(mask);
        l.mask.assign(m, m + mlen);
      }
      regs[d] = l;
    } else if (name == "cmp") {
      size_t s = Off(U32(e, NFTNL_EXPR_CMP_SREG));
      uint32_t len = 0;
      auto* data = static_cast<const uint8_t*>(nftnl_expr_get(e, NFTNL_EXPR_CMP_DATA, &len));
      Lhs l = regs.count(s) ? regs[s] : Lhs{"?", Kind::kRaw};
      uint32_t op = U32(e, NFTNL_EXPR_CMP_OP);
      if (!data) continue;
      if (l.kind == Kind::kProto && len == 1 && op == NFT_CMP_EQ && (l.text == "meta l4proto" || l.text.find("protocol") != std::string::npos || l.text.find("nexthdr") != std::string::npos)) {
        std::string p = Value(l, data, len);
        if (p == "tcp" || p == "udp") {
          proto_word = p;  // the next transport match reads "tcp dport", as nft prints it
          if (l.text == "meta l4proto") continue;  // implied by it
        }
      }
      if (l.kind == Kind::kNfproto && op == NFT_CMP_EQ && len == 1) {
        v6_context = data[0] == NFPROTO_IPV6;
        continue;  // implied by the address match that follows
      }
      if ((l.kind == Kind::kCtState || l.kind == Kind::kCtStatus) && op == NFT_CMP_NEQ && AllZeroBytes(data, len) && !l.mask.empty()) {
        parts.push_back(l.text + " " + Value(l, l.mask.data(), l.mask.size()));
        continue;
      }
      if (l.kind == Kind::kPresent) {
        parts.push_back(l.text + " " + Value(l, data, len));
        continue;
      }
      if (!l.mask.empty() && l.kind != Kind::kCtState && l.kind != Kind::kCtStatus) {
        // A masked match: "tcp flags & (syn|ack) == syn", as nft prints it.
        parts.push_back(l.text + " & (" + Value(l, l.mask.data(), l.mask.size()) + ") " +
                        (op == NFT_CMP_EQ ? "== " : CmpOp(op)) + Value(l, data, len));
        continue;
      }
      // "x >= a" then "x <= b" is how nft writes the range "x a-b".
      std::string ge = l.text + " >= ";
      if (op == NFT_CMP_LTE && !parts.empty() && parts.back().rfind(ge, 0) == 0) {
        parts.back() = l.text + " " + parts.back().substr(ge.size()) + "-" + Value(l, data, len);
        continue;
      }
      parts.push_back(l.text + " " + CmpOp(op) + Value(l, data, len));
    } else if (name == "range") {
      size_t s = Off(U32(e, NFTNL_EXPR_RANGE_SREG));
      uint32_t l1 = 0, l2 = 0;
      auto* from = static_cast<const uint8_t*>(nftnl_expr_get(e, NFTNL_EXPR_RANGE_FROM_DATA, &l1));
      auto* to = static_cast<const uint8_t*>(nftnl_expr_get(e, NFTNL_EXPR_RANGE_TO_DATA, &l2));
      Lhs l = regs.count(s) ? regs[s] : Lhs{"?", Kind::kRaw};
      if (from && to)
        parts.push_back(l.text + (U32(e, NFTNL_EXPR_RANGE_OP) == NFT_RANGE_NEQ ? " != " : " ") + Value(l, from, l1) +
                        "-" + Value(l, to, l2));
    } else if (name == "lookup") {
      size_t s = Off(U32(e, NFTNL_EXPR_LOOKUP_SREG));
      Lhs l = regs.count(s) ? regs[s] : Lhs{"?", Kind::kRaw};
      // A concatenated key: the registers that follow hold the other fields.
      std::string key = l.text;
      for (size_t o = s + 4; regs.count(o) && o < s + 64; o += 4) {
        if (regs[o].text == l.text) continue;
        key += " . " + regs[o].text;
        s = o;
      }
      const char* set = nftnl_expr_get_str(e, NFTNL_EXPR_LOOKUP_SET);
      bool inv = U32(e, NFTNL_EXPR_LOOKUP_FLAGS) & NFT_LOOKUP_F_INV;
      if (nftnl_expr_is_set(e, NFTNL_EXPR_LOOKUP_DREG)) {
        if (U32(e, NFTNL_EXPR_LOOKUP_DREG) == NFT_REG_VERDICT) parts.push_back(key + " vmap @" + (set ? set : "?"));
        else regs[Off(U32(e, NFTNL_EXPR_LOOKUP_DREG))] = {key + " map @" + (set ? set : "?"), Kind::kRaw};
      } else {
        parts.push_back(key + (inv ? " != @" : " @") + (set ? set : "?"));
      }
    } else if (name == "immediate") {
      uint32_t dreg = U32(e, NFTNL_EXPR_IMM_DREG);
      if (dreg != NFT_REG_VERDICT) {
        uint32_t len = 0;
        auto* d = static_cast<const uint8_t*>(nftnl_expr_get(e, NFTNL_EXPR_IMM_DATA, &len));
        if (d) imm[Off(dreg)] = std::vector<uint8_t>(d, d + len);
        continue;
      }
      int32_t v = static_cast<int32_t>(U32(e, NFTNL_EXPR_IMM_VERDICT));
      const char* chain = nftnl_expr_is_set(e, NFTNL_EXPR_IMM_CHAIN) ? nftnl_expr_get_str(e, NFTNL_EXPR_IMM_CHAIN) : "";
      switch (v) {
        case NF_ACCEPT: parts.push_back("accept"); break;
        case NF_DROP: parts.push_back("drop"); break;
        case NFT_RETURN: parts.push_back("return"); break;
        case NFT_CONTINUE: parts.push_back("continue"); break;
        case NFT_JUMP: parts.push_back(std::string("jump ") + chain); break;
        case NFT_GOTO: parts.push_back(std::string("goto ") + chain); break;
        default: parts.push_back("verdict " + std::to_string(v));
      }
    } else if (name == "counter") {
      parts.push_back("counter");
    } else if (name == "log") {
      std::string t = "log";
      if (nftnl_expr_is_set(e, NFTNL_EXPR_LOG_PREFIX))
        t += std::string(" prefix \"") + nftnl_expr_get_str(e, NFTNL_EXPR_LOG_PREFIX) + "\"";
      if (nftnl_expr_is_set(e, NFTNL_EXPR_LOG_GROUP)) t += " group " + std::to_string(nftnl_expr_get_u16(e, NFTNL_EXPR_LOG_GROUP));
      parts.push_back(t);
    } else if (name == "reject") {
      parts.push_back(U32(e, NFTNL_EXPR_REJECT_TYPE) == NFT_REJECT_TCP_RST ? "reject with tcp reset" : "reject");
    } else if (name == "limit") {
      parts.push_back(std::string("limit rate ") + (U32(e, NFTNL_EXPR_LIMIT_FLAGS) & NFT_LIMIT_F_INV ? "over " : "") +
                      std::to_string(nftnl_expr_get_u64(e, NFTNL_EXPR_LIMIT_RATE)) + "/" +
                      UnitName(nftnl_expr_get_u64(e, NFTNL_EXPR_LIMIT_UNIT)));
    } else if (name == "nat") {
      uint32_t type = U32(e, NFTNL_EXPR_NAT_TYPE);
      std::string t = type == NFT_NAT_DNAT ? "dnat to " : "snat to ";
      bool v6 = U32(e, NFTNL_EXPR_NAT_FAMILY) == NFPROTO_IPV6;
      if (nftnl_expr_is_set(e, NFTNL_EXPR_NAT_REG_ADDR_MIN)) {
        size_t o = Off(U32(e, NFTNL_EXPR_NAT_REG_ADDR_MIN));
        if (imm.count(o)) t += Value({"", v6 ? Kind::kAddr6 : Kind::kAddr4}, imm[o].data(), imm[o].size());
        else if (regs.count(o)) t += regs[o].text;
      }
      if (nftnl_expr_is_set(e, NFTNL_EXPR_NAT_REG_PROTO_MIN)) {
        size_t o = Off(U32(e, NFTNL_EXPR_NAT_REG_PROTO_MIN));
        if (imm.count(o) && imm[o].size() >= 2) t += ":" + Value({"", Kind::kPort}, imm[o].data(), 2);
      }
      parts.push_back(t);
    } else if (name == "masq") {
      parts.push_back("masquerade");
    } else if (name == "redir") {
      parts.push_back("redirect");
    } else if (name == "dynset") {
      const char* set = nftnl_expr_get_str(e, NFTNL_EXPR_DYNSET_SET_NAME);
      size_t s = Off(U32(e, NFTNL_EXPR_DYNSET_SREG_KEY));
      std::string key = regs.count(s) ? regs[s].text : "?";
      std::string inner;
      if (nftnl_expr_is_set(e, NFTNL_EXPR_DYNSET_EXPR)) {
        auto* ie = static_cast<const nftnl_expr*>(nftnl_expr_get(e, NFTNL_EXPR_DYNSET_EXPR, nullptr));
        if (ie) {
          const char* n = nftnl_expr_get_str(ie, NFTNL_EXPR_NAME);
          if (n && std::strcmp(n, "limit") == 0)
            inner = std::string(" limit rate ") + (U32(ie, NFTNL_EXPR_LIMIT_FLAGS) & NFT_LIMIT_F_INV ? "over " : "") +
                    std::to_string(nftnl_expr_get_u64(ie, NFTNL_EXPR_LIMIT_RATE)) + "/" +
                    UnitName(nftnl_expr_get_u64(ie, NFTNL_EXPR_LIMIT_UNIT)) + " burst " +
                    std::to_string(U32(ie, NFTNL_EXPR_LIMIT_BURST)) + " packets";
          else if (n) inner = std::string(" ") + n;
        }
      }
      parts.push_back(std::string(U32(e, NFTNL_EXPR_DYNSET_OP) == NFT_DYNSET_OP_ADD ? "add" : "update") + " @" +
                      (set ? set : "?") + " { " + key + inner + " }");
    } else if (name == "connlimit") {
      parts.push_back(std::string("ct count ") + (U32(e, NFTNL_EXPR_CONNLIMIT_FLAGS) & NFT_CONNLIMIT_F_INV ? "over " : "") +
                      std::to_string(U32(e, NFTNL_EXPR_CONNLIMIT_COUNT)));
    } else if (name == "quota") {
      parts.push_back(std::string("quota ") + (U32(e, NFTNL_EXPR_QUOTA_FLAGS) & NFT_QUOTA_F_INV ? "over " : "") +
                      std::to_string(nftnl_expr_get_u64(e, NFTNL_EXPR_QUOTA_BYTES)) + " bytes");
    } else if (name == "objref") {
      if (nftnl_expr_is_set(e, NFTNL_EXPR_OBJREF_SET_SREG)) {  // "quota name ip saddr map @m"
        size_t o = Off(U32(e, NFTNL_EXPR_OBJREF_SET_SREG));
        const char* set = nftnl_expr_is_set(e, NFTNL_EXPR_OBJREF_SET_NAME) ? nftnl_expr_get_str(e, NFTNL_EXPR_OBJREF_SET_NAME) : "?";
        parts.push_back("object name " + (regs.count(o) ? regs[o].text : std::string("?")) + " map @" + set);
        continue;
      }
      const char* obj = nftnl_expr_is_set(e, NFTNL_EXPR_OBJREF_IMM_NAME) ? nftnl_expr_get_str(e, NFTNL_EXPR_OBJREF_IMM_NAME) : nullptr;
      parts.push_back(std::string("object ") + (obj ? obj : "(by map)"));
    } else if (name == "match" || name == "target") {
      uint16_t attr = name == "match" ? static_cast<uint16_t>(NFTNL_EXPR_MT_NAME) : static_cast<uint16_t>(NFTNL_EXPR_TG_NAME);
      const char* xt = nftnl_expr_is_set(e, attr) ? nftnl_expr_get_str(e, attr) : "?";
      parts.push_back(std::string("xt ") + name + " " + xt);
    } else if (name == "notrack") {
      parts.push_back("notrack");
    } else if (name == "queue") {
      parts.push_back("queue");
    } else if (name == "meta" || name == "ct" || name == "payload") {
      // A statement: "meta mark set 0x00000005", "ct mark set meta mark".
      Lhs target = name == "meta"  ? MetaLhs(U32(e, NFTNL_EXPR_META_KEY))
                   : name == "ct" ? CtLhs(U32(e, NFTNL_EXPR_CT_KEY), false, 0)
                                  : PayloadLhs(family, U32(e, NFTNL_EXPR_PAYLOAD_BASE), U32(e, NFTNL_EXPR_PAYLOAD_OFFSET),
                                               U32(e, NFTNL_EXPR_PAYLOAD_LEN), v6_context);
      if (target.text.rfind("th ", 0) == 0) target.text = proto_word + target.text.substr(2);  // "tcp dport set 143"
      uint16_t sreg_attr = name == "meta" ? static_cast<uint16_t>(NFTNL_EXPR_META_SREG)
                           : name == "ct" ? static_cast<uint16_t>(NFTNL_EXPR_CT_SREG)
                                          : static_cast<uint16_t>(NFTNL_EXPR_PAYLOAD_SREG);
      std::string value = "?";
      if (nftnl_expr_is_set(e, sreg_attr)) {
        size_t o = Off(U32(e, sreg_attr));
        if (imm.count(o)) value = Value(target, imm[o].data(), imm[o].size());
        else if (regs.count(o)) value = regs[o].text;
      }
      parts.push_back(target.text + " set " + value);
    } else {
      // An expression this renderer does not know: its name only (never libnftnl's register
      // notation); a register it may have loaded is attributed to it.
      char buf[512] = {};
      nftnl_expr_snprintf(buf, sizeof buf, e, NFTNL_OUTPUT_DEFAULT, 0);
      const char* load = std::strstr(buf, "=> reg ");
      if (load) {
        regs[Off(static_cast<uint32_t>(std::strtoul(load + 7, nullptr, 10)))] = {name, Kind::kRaw};
        continue;
      }
      parts.push_back(name);
    }
  }
  nftnl_expr_iter_destroy(it);
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : " ") + p;
  return out;
}

}  // namespace mw::analysis
