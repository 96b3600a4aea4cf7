#include "backend/nft/nft_codec.h"

#include <linux/rtnetlink.h>

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <libnftnl/expr.h>
#include <libnftnl/udata.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <net/if.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

namespace mw::nft {
namespace {

// nft's datatype numbers for set keys (nftables src/datatype.h).
constexpr uint32_t kTypeIpAddr = 7;
constexpr uint32_t kTypeIp6Addr = 8;
// nft's set user-data: key byte order (big endian), so `nft list` prints addresses.
constexpr uint32_t kByteorderBigEndian = 2;

void AddExpr(nftnl_rule* r, nftnl_expr* e) { nftnl_rule_add_expr(r, e); }

void Meta(nftnl_rule* r, uint32_t key) {
  nftnl_expr* e = nftnl_expr_alloc("meta");
  nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, key);
  nftnl_expr_set_u32(e, NFTNL_EXPR_META_DREG, NFT_REG_1);
  AddExpr(r, e);
}

void Cmp(nftnl_rule* r, uint32_t op, const void* data, uint32_t len, uint32_t sreg = NFT_REG_1) {
  nftnl_expr* e = nftnl_expr_alloc("cmp");
  nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, sreg);
  nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, op);
  nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, data, len);
  AddExpr(r, e);
}

void Payload(nftnl_rule* r, uint32_t base, uint32_t offset, uint32_t len) {
  nftnl_expr* e = nftnl_expr_alloc("payload");
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, base);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, offset);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, len);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, NFT_REG_1);
  AddExpr(r, e);
}

void NfProto(nftnl_rule* r, Family f) {
  Meta(r, NFT_META_NFPROTO);
  uint8_t proto = f == Family::kV4 ? NFPROTO_IPV4 : NFPROTO_IPV6;
  Cmp(r, NFT_CMP_EQ, &proto, 1);
}

void SourceAddr(nftnl_rule* r, Family f) {
  if (f == Family::kV4) Payload(r, NFT_PAYLOAD_NETWORK_HEADER, 12, 4);
  else Payload(r, NFT_PAYLOAD_NETWORK_HEADER, 8, 16);
}

}  // namespace

RulePtr BuildRule(const RuleSpec& spec) {
  RulePtr rule(nftnl_rule_alloc());
  nftnl_rule* r = rule.get();
  nftnl_rule_set_u32(r, NFTNL_RULE_FAMILY, NFPROTO_INET);
  nftnl_rule_set_str(r, NFTNL_RULE_TABLE, kTable);
  nftnl_rule_set_str(r, NFTNL_RULE_CHAIN, kChain);

  if (spec.loopback) {
    Meta(r, NFT_META_IIFNAME);
    char name[IFNAMSIZ] = "lo";
    Cmp(r, NFT_CMP_EQ, name, IFNAMSIZ);
  }
  if (spec.nonlocal_dest) {
    nftnl_expr* fib = nftnl_expr_alloc("fib");
    nftnl_expr_set_u32(fib, NFTNL_EXPR_FIB_FLAGS, NFTA_FIB_F_DADDR);
    nftnl_expr_set_u32(fib, NFTNL_EXPR_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE);
    nftnl_expr_set_u32(fib, NFTNL_EXPR_FIB_DREG, NFT_REG_1);
    AddExpr(r, fib);
    uint32_t local = RTN_LOCAL;
    Cmp(r, NFT_CMP_NEQ, &local, 4);
  }
  if (spec.port) {
    Meta(r, NFT_META_L4PROTO);
    uint8_t tcp = IPPROTO_TCP;
    Cmp(r, NFT_CMP_EQ, &tcp, 1);
    Payload(r, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
    uint16_t port = htons(spec.port);
    Cmp(r, NFT_CMP_EQ, &port, 2);
  }
  if (spec.ct_new) {
    nftnl_expr* ct = nftnl_expr_alloc("ct");
    nftnl_expr_set_u32(ct, NFTNL_EXPR_CT_KEY, NFT_CT_STATE);
    nftnl_expr_set_u32(ct, NFTNL_EXPR_CT_DREG, NFT_REG_1);
    AddExpr(r, ct);
    nftnl_expr* bw = nftnl_expr_alloc("bitwise");
    uint32_t mask = NF_CT_STATE_BIT(IP_CT_NEW), zero = 0;
    nftnl_expr_set_u32(bw, NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
    nftnl_expr_set_u32(bw, NFTNL_EXPR_BITWISE_DREG, NFT_REG_1);
    nftnl_expr_set_u32(bw, NFTNL_EXPR_BITWISE_LEN, 4);
    nftnl_expr_set(bw, NFTNL_EXPR_BITWISE_MASK, &mask, 4);
    nftnl_expr_set(bw, NFTNL_EXPR_BITWISE_XOR, &zero, 4);
    AddExpr(r, bw);
    Cmp(r, NFT_CMP_NEQ, &zero, 4);
  }
  if (spec.family) NfProto(r, *spec.family);
  if (!spec.saddr_set.empty() && spec.family) {
    SourceAddr(r, *spec.family);
    if (spec.shard_mask) {
      // This rule's shard: (source & mask) == value, computed in register 2 so that register 1
      // keeps the source for the lookup.
      uint32_t len = static_cast<uint32_t>(AddrLen(*spec.family));
      std::vector<uint8_t> zero(len, 0);
      nftnl_expr* bw = nftnl_expr_alloc("bitwise");
      nftnl_expr_set_u32(bw, NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
      nftnl_expr_set_u32(bw, NFTNL_EXPR_BITWISE_DREG, NFT_REG_2);
      nftnl_expr_set_u32(bw, NFTNL_EXPR_BITWISE_LEN, len);
      nftnl_expr_set(bw, NFTNL_EXPR_BITWISE_MASK, spec.shard_mask->b.data(), len);
      nftnl_expr_set(bw, NFTNL_EXPR_BITWISE_XOR, zero.data(), len);
      AddExpr(r, bw);
      Cmp(r, NFT_CMP_EQ, spec.shard_value.b.data(), len, NFT_REG_2);
    }
    nftnl_expr* lk = nftnl_expr_alloc("lookup");
    nftnl_expr_set_u32(lk, NFTNL_EXPR_LOOKUP_SREG, NFT_REG_1);
    nftnl_expr_set_str(lk, NFTNL_EXPR_LOOKUP_SET, spec.saddr_set.c_str());
    nftnl_expr_set_u32(lk, NFTNL_EXPR_LOOKUP_FLAGS, 0);  // the kernel reports it; so do we
    AddExpr(r, lk);
  }
  if (!spec.meter_set.empty() && spec.limit && spec.family) {
    SourceAddr(r, *spec.family);
    nftnl_expr* lim = nftnl_expr_alloc("limit");
    nftnl_expr_set_u64(lim, NFTNL_EXPR_LIMIT_RATE, spec.limit->count);
    nftnl_expr_set_u64(lim, NFTNL_EXPR_LIMIT_UNIT, spec.limit->unit_seconds);
    nftnl_expr_set_u32(lim, NFTNL_EXPR_LIMIT_BURST, spec.limit->burst);
    nftnl_expr_set_u32(lim, NFTNL_EXPR_LIMIT_TYPE, NFT_LIMIT_PKTS);
    nftnl_expr_set_u32(lim, NFTNL_EXPR_LIMIT_FLAGS, NFT_LIMIT_F_INV);
    nftnl_expr* ds = nftnl_expr_alloc("dynset");
    nftnl_expr_set_u32(ds, NFTNL_EXPR_DYNSET_SREG_KEY, NFT_REG_1);
    nftnl_expr_set_u32(ds, NFTNL_EXPR_DYNSET_OP, NFT_DYNSET_OP_UPDATE);
    nftnl_expr_set_str(ds, NFTNL_EXPR_DYNSET_SET_NAME, spec.meter_set.c_str());
    nftnl_expr_set_u64(ds, NFTNL_EXPR_DYNSET_TIMEOUT, 0);  // 0: the set's own timeout
    nftnl_expr_set(ds, NFTNL_EXPR_DYNSET_EXPR, lim, 0);
    AddExpr(r, ds);
  }
  if (spec.verdict == Verdict::kReject) {
    nftnl_expr* rj = nftnl_expr_alloc("reject");
    nftnl_expr_set_u32(rj, NFTNL_EXPR_REJECT_TYPE, NFT_REJECT_TCP_RST);
    nftnl_expr_set_u8(rj, NFTNL_EXPR_REJECT_CODE, 0);
    AddExpr(r, rj);
  } else {
    nftnl_expr* im = nftnl_expr_alloc("immediate");
    nftnl_expr_set_u32(im, NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
    nftnl_expr_set_u32(im, NFTNL_EXPR_IMM_VERDICT, spec.verdict == Verdict::kAccept ? NF_ACCEPT : NF_DROP);
    AddExpr(r, im);
  }
  nftnl_udata_buf* ud = nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN);
  nftnl_udata_put_strz(ud, NFTNL_UDATA_RULE_COMMENT, spec.key.c_str());
  nftnl_rule_set_data(r, NFTNL_RULE_USERDATA, nftnl_udata_buf_data(ud), nftnl_udata_buf_len(ud));
  nftnl_udata_buf_free(ud);
  return rule;
}

std::string RenderBody(const nftnl_rule* rule) {
  std::string out;
  nftnl_expr_iter* it = nftnl_expr_iter_create(rule);
  char buf[4096];
  while (nftnl_expr* e = nftnl_expr_iter_next(it)) {
    const char* name = nftnl_expr_get_str(e, NFTNL_EXPR_NAME);
    buf[0] = 0;
    nftnl_expr_snprintf(buf, sizeof buf, e, NFTNL_OUTPUT_DEFAULT, 0);
    if (!out.empty()) out += "; ";
    out += name ? name : "?";
    out += " ";
    out += buf;
  }
  nftnl_expr_iter_destroy(it);
  // Trim trailing blanks libnftnl leaves.
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

std::string RenderBody(const RuleSpec& spec) { return RenderBody(BuildRule(spec).get()); }

namespace {
int CommentCb(const nftnl_udata* attr, void* data) {
  if (nftnl_udata_type(attr) == NFTNL_UDATA_RULE_COMMENT) {
    const char* s = static_cast<const char*>(nftnl_udata_get(attr));
    uint8_t len = nftnl_udata_len(attr);
    *static_cast<std::string*>(data) = std::string(s, strnlen(s, len));
  }
  return 0;
}
}  // namespace

std::string RuleComment(const nftnl_rule* rule) {
  if (!nftnl_rule_is_set(rule, NFTNL_RULE_USERDATA)) return "";
  uint32_t len = 0;
  const void* data = nftnl_rule_get_data(rule, NFTNL_RULE_USERDATA, &len);
  std::string comment;
  if (data) nftnl_udata_parse(data, len, CommentCb, &comment);
  return comment;
}

SetPtr BuildSet(const SetSpec& spec) {
  SetPtr set(nftnl_set_alloc());
  nftnl_set* s = set.get();
  nftnl_set_set_str(s, NFTNL_SET_TABLE, kTable);
  nftnl_set_set_str(s, NFTNL_SET_NAME, spec.name.c_str());
  nftnl_set_set_u32(s, NFTNL_SET_FAMILY, NFPROTO_INET);
  nftnl_set_set_u32(s, NFTNL_SET_KEY_TYPE, spec.family == Family::kV4 ? kTypeIpAddr : kTypeIp6Addr);
  nftnl_set_set_u32(s, NFTNL_SET_KEY_LEN, static_cast<uint32_t>(AddrLen(spec.family)));
  if (spec.kind == SetSpec::Kind::kAllowNets) {
    nftnl_set_set_u32(s, NFTNL_SET_FLAGS, NFT_SET_INTERVAL);
  } else if (spec.kind == SetSpec::Kind::kAllowHosts) {
    nftnl_set_set_u32(s, NFTNL_SET_FLAGS, 0);
    if (spec.size) nftnl_set_set_u32(s, NFTNL_SET_DESC_SIZE, spec.size);
  } else {
    nftnl_set_set_u32(s, NFTNL_SET_FLAGS, NFT_SET_TIMEOUT | NFT_SET_EVAL);
    nftnl_set_set_u64(s, NFTNL_SET_TIMEOUT, spec.timeout_ms);
    nftnl_set_set_u32(s, NFTNL_SET_DESC_SIZE, spec.size);
  }
  nftnl_udata_buf* ud = nftnl_udata_buf_alloc(64);
  nftnl_udata_put_u32(ud, NFTNL_UDATA_SET_KEYBYTEORDER, kByteorderBigEndian);
  nftnl_set_set_data(s, NFTNL_SET_USERDATA, nftnl_udata_buf_data(ud), nftnl_udata_buf_len(ud));
  nftnl_udata_buf_free(ud);
  return set;
}

bool ParseSetSpec(const nftnl_set* s, SetSpec* out) {
  const char* name = nftnl_set_get_str(s, NFTNL_SET_NAME);
  out->name = name ? name : "";
  uint32_t type = nftnl_set_get_u32(s, NFTNL_SET_KEY_TYPE);
  uint32_t len = nftnl_set_get_u32(s, NFTNL_SET_KEY_LEN);
  uint32_t flags = nftnl_set_get_u32(s, NFTNL_SET_FLAGS);
  if (type == kTypeIpAddr && len == 4) out->family = Family::kV4;
  else if (type == kTypeIp6Addr && len == 16) out->family = Family::kV6;
  else return false;
  if (nftnl_set_is_set(s, NFTNL_SET_DATA_TYPE) || nftnl_set_is_set(s, NFTNL_SET_OBJ_TYPE)) return false;
  flags &= ~static_cast<uint32_t>(NFT_SET_ANONYMOUS | NFT_SET_CONSTANT);
  if (flags == 0 || flags == NFT_SET_INTERVAL) {
    out->kind = flags ? SetSpec::Kind::kAllowNets : SetSpec::Kind::kAllowHosts;
    out->timeout_ms = 0;
    out->size = !flags && nftnl_set_is_set(s, NFTNL_SET_DESC_SIZE) ? nftnl_set_get_u32(s, NFTNL_SET_DESC_SIZE) : 0;
    return true;
  }
  if (flags == (NFT_SET_TIMEOUT | NFT_SET_EVAL)) {
    out->kind = SetSpec::Kind::kMeter;
    out->timeout_ms = nftnl_set_get_u64(s, NFTNL_SET_TIMEOUT);
    out->size = nftnl_set_get_u32(s, NFTNL_SET_DESC_SIZE);
    return true;
  }
  return false;
}

size_t ElementBytes(Family family, bool interval_end) {
  // LIST_ELEM nest { KEY nest { DATA_VALUE } [FLAGS] }, each attribute header 4 bytes, aligned.
  return MNL_ATTR_HDRLEN + MNL_ATTR_HDRLEN + MNL_ATTR_HDRLEN + MNL_ALIGN(AddrLen(family)) +
         (interval_end ? MNL_ATTR_HDRLEN + sizeof(uint32_t) : 0);
}

size_t MaxElementMessageBytes(const std::string& set) {
  // The table and set names, then the element list.
  return MNL_ATTR_HDRLEN + MNL_ALIGN(std::strlen(kTable) + 1) + MNL_ATTR_HDRLEN + MNL_ALIGN(set.size() + 1) +
         kMaxAttrLen + MNL_ALIGN(1);
}

size_t PutElements(nlmsghdr* nlh, const std::string& set, Family family,
                   const std::vector<RawElement>& elems, size_t begin, size_t end) {
  mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_TABLE, kTable);
  mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_SET, set.c_str());
  nlattr* list = mnl_attr_nest_start(nlh, NFTA_SET_ELEM_LIST_ELEMENTS);
  size_t len = AddrLen(family);
  size_t used = MNL_ATTR_HDRLEN;  // the list's own header
  size_t i = begin;
  for (; i < end; ++i) {
    // Stop before the element that would push the list's length past 16 bits.
    size_t need = ElementBytes(family, elems[i].end);
    if (i > begin && used + need > kMaxAttrLen) break;
    used += need;
    nlattr* el = mnl_attr_nest_start(nlh, NFTA_LIST_ELEM);
    nlattr* key = mnl_attr_nest_start(nlh, NFTA_SET_ELEM_KEY);
    mnl_attr_put(nlh, NFTA_DATA_VALUE, len, elems[i].key.b.data());
    mnl_attr_nest_end(nlh, key);
    if (elems[i].end) mnl_attr_put_u32(nlh, NFTA_SET_ELEM_FLAGS, htonl(NFT_SET_ELEM_INTERVAL_END));
    mnl_attr_nest_end(nlh, el);
  }
  mnl_attr_nest_end(nlh, list);
  return i;
}

std::vector<RawElement> IntervalsToElements(const std::vector<Interval>& intervals, SetSpec::Kind kind) {
  std::vector<RawElement> out;
  bool ranges = kind == SetSpec::Kind::kAllowNets;
  out.reserve(intervals.size() * (ranges ? 2 : 1));
  for (const auto& iv : intervals) {
    out.push_back({iv.start, false});
    if (ranges && !iv.to_max) out.push_back({iv.end, true});
  }
  return out;
}

namespace {
template <typename Fn>
void ForEachNested(const nlattr* nest, Fn fn) {
  const char* p = static_cast<const char*>(mnl_attr_get_payload(nest));
  int len = static_cast<int>(mnl_attr_get_payload_len(nest));
  while (len >= static_cast<int>(sizeof(nlattr))) {
    auto* a = reinterpret_cast<const nlattr*>(p);
    if (a->nla_len < sizeof(nlattr) || a->nla_len > len) return;
    fn(a);
    int step = static_cast<int>(MNL_ALIGN(a->nla_len));
    p += step;
    len -= step;
  }
}

struct ElemParse {
  Family family;
  std::vector<RawElement>* out;
  bool ok = true;
};

int ElemCb(const nlattr* attr, void* data) {
  auto* ctx = static_cast<ElemParse*>(data);
  if (mnl_attr_get_type(attr) != NFTA_LIST_ELEM) return MNL_CB_OK;
  RawElement re;
  bool have_key = false;
  ForEachNested(attr, [&](const nlattr* a) {
    uint16_t t = mnl_attr_get_type(a);
    if (t == NFTA_SET_ELEM_KEY) {
      ForEachNested(a, [&](const nlattr* k) {
        if (mnl_attr_get_type(k) == NFTA_DATA_VALUE) {
          size_t len = mnl_attr_get_payload_len(k);
          if (len != AddrLen(ctx->family)) {
            ctx->ok = false;
            return;
          }
          std::memcpy(re.key.b.data(), mnl_attr_get_payload(k), len);
          have_key = true;
        }
      });
    } else if (t == NFTA_SET_ELEM_FLAGS) {
      re.end = (ntohl(mnl_attr_get_u32(a)) & NFT_SET_ELEM_INTERVAL_END) != 0;
    }
  });
  if (have_key) ctx->out->push_back(re);
  return MNL_CB_OK;
}

int TopCb(const nlattr* attr, void* data) {
  if (mnl_attr_get_type(attr) == NFTA_SET_ELEM_LIST_ELEMENTS) mnl_attr_parse_nested(attr, ElemCb, data);
  return MNL_CB_OK;
}
}  // namespace

bool ParseElements(const nlmsghdr* nlh, Family family, std::vector<RawElement>* out) {
  ElemParse ctx{family, out};
  if (mnl_attr_parse(nlh, sizeof(nfgenmsg), TopCb, &ctx) < 0) return false;
  return ctx.ok;
}

std::vector<Interval> ElementsToIntervals(Family family, std::vector<RawElement> elems, SetSpec::Kind kind,
                                          bool* clean) {
  *clean = true;
  if (kind != SetSpec::Kind::kAllowNets) {  // a hash set: every element is one address
    // The kernel dumps a hash set in bucket order: sort the addresses (IPv4 as integers, by
    // radix: a million of them), then make the intervals.
    std::vector<Interval> out;
    out.reserve(elems.size());
    if (family == Family::kV4) {
      std::vector<uint32_t> keys;
      keys.reserve(elems.size());
      for (const auto& e : elems) {
        if (e.end) {
          *clean = false;
          continue;
        }
        uint32_t be;
        std::memcpy(&be, e.key.b.data(), 4);
        keys.push_back(__builtin_bswap32(be));
      }
      if (!std::is_sorted(keys.begin(), keys.end())) RadixSort32(keys);
      for (uint32_t k : keys) {
        Addr a;
        uint32_t be = __builtin_bswap32(k);
        std::memcpy(a.b.data(), &be, 4);
        out.push_back(HostInterval(family, a));
      }
      return out;
    }
    std::vector<Addr> keys;
    keys.reserve(elems.size());
    for (const auto& e : elems) {
      if (e.end) *clean = false;
      else keys.push_back(e.key);
    }
    if (!std::is_sorted(keys.begin(), keys.end())) std::sort(keys.begin(), keys.end());
    for (const Addr& a : keys) out.push_back(HostInterval(family, a));
    return out;
  }
  auto before = [](const RawElement& a, const RawElement& b) {
    if (!(a.key == b.key)) return a.key < b.key;
    return a.end && !b.end;  // at one key, an end closes before a start opens
  };
  // The kernel dumps interval sets in reverse; mailward's own record is already in order.
  if (std::is_sorted(elems.rbegin(), elems.rend(), before)) std::reverse(elems.begin(), elems.end());
  else if (!std::is_sorted(elems.begin(), elems.end(), before)) std::sort(elems.begin(), elems.end(), before);
  std::vector<Interval> out;
  out.reserve(elems.size() / 2 + 1);
  bool open = false;
  Interval cur;
  for (const auto& e : elems) {
    if (!e.end) {
      if (open) *clean = false;  // a start inside an open interval: not a shape we can diff
      cur.start = e.key;
      open = true;
    } else if (open) {
      cur.end = e.key;
      cur.to_max = false;
      out.push_back(cur);
      open = false;
    }
  }
  if (open) {
    cur.end = Addr{};
    cur.to_max = true;
    out.push_back(cur);
  }
  return out;
}

}  // namespace mw::nft
