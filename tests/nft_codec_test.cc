#include "backend/nft/nft_codec.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>

#include <cstring>
#include <string>
#include <vector>

#include "fakes/cidr.h"

namespace mw::nft {
namespace {

using mw::testing::C;

TEST(NftCodec, RendersTheRulesMailwardMakes) {
  RuleSpec r;
  r.key = "mailward:143:allow:office:ipv4";
  r.port = 143;
  r.family = Family::kV4;
  r.saddr_set = "allow_office_v4";
  EXPECT_EQ(RenderBody(r),
            "meta load l4proto => reg 1 ; cmp eq reg 1 0x00000006 ; payload load 2b @ transport header + 2 => reg 1 ; "
            "cmp eq reg 1 0x00008f00 ; meta load nfproto => reg 1 ; cmp eq reg 1 0x00000002 ; payload load 4b @ "
            "network header + 12 => reg 1 ; lookup reg 1 set allow_office_v4 0x0 ; immediate reg 0 accept");
  RuleSpec lo;
  lo.key = "mailward:loopback";
  lo.loopback = true;
  EXPECT_EQ(RenderBody(lo), "meta load iifname => reg 1 ; cmp eq reg 1 0x00006f6c 0x00000000 0x00000000 0x00000000 ; "
                            "immediate reg 0 accept");
  RuleSpec rej;
  rej.key = "k";
  rej.port = 110;
  rej.ct_new = true;
  rej.verdict = Verdict::kReject;
  EXPECT_NE(RenderBody(rej).find("reject type 1 code 0"), std::string::npos);
  EXPECT_NE(RenderBody(rej).find("ct load state"), std::string::npos);
}

TEST(NftCodec, CommentCarriesTheKey) {
  RuleSpec r;
  r.key = "mailward:993:open";
  r.port = 993;
  auto rule = BuildRule(r);
  EXPECT_EQ(RuleComment(rule.get()), "mailward:993:open");
}

TEST(NftCodec, SetSpecRoundTrips) {
  for (auto kind : {SetSpec::Kind::kAllowHosts, SetSpec::Kind::kAllowNets, SetSpec::Kind::kMeter}) {
    SetSpec s{"x", Family::kV6, kind, kind == SetSpec::Kind::kMeter ? 120000u : 0u,
              kind == SetSpec::Kind::kMeter ? 65535u : kind == SetSpec::Kind::kAllowHosts ? 4096u : 0u};
    auto built = BuildSet(s);
    SetSpec back;
    ASSERT_TRUE(ParseSetSpec(built.get(), &back));
    EXPECT_EQ(back, s);
  }
}

TEST(NftCodec, ElementsRoundTripThroughAMessage) {
  auto iv = NormalizeToIntervals(Family::kV6, {C("2001:db8::/48"), C("2001:db8:1::1"), C("ffff::/16")});
  auto raw = IntervalsToElements(iv, SetSpec::Kind::kAllowNets);
  ASSERT_EQ(raw.size(), 5u);  // the last interval reaches the top: no end element
  std::vector<char> buf(1 << 16);
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_NEWSETELEM, NFPROTO_INET, 0, 1);
  PutElements(nlh, "allow_x_v6", Family::kV6, raw, 0, raw.size());
  std::vector<RawElement> parsed;
  ASSERT_TRUE(ParseElements(nlh, Family::kV6, &parsed));
  ASSERT_EQ(parsed.size(), raw.size());
  bool clean = false;
  EXPECT_EQ(ElementsToIntervals(Family::kV6, parsed, SetSpec::Kind::kAllowNets, &clean), iv);
  EXPECT_TRUE(clean);
}

TEST(NftCodec, NftsZeroMarkerIsIgnored) {
  // nft adds "0.0.0.0 flags interval end" to interval sets; the kernel dumps in reverse.
  auto iv = NormalizeToIntervals(Family::kV4, {C("10.0.0.0/24"), C("10.0.2.5")});
  auto raw = IntervalsToElements(iv, SetSpec::Kind::kAllowNets);
  raw.push_back(RawElement{Addr{}, true});
  std::reverse(raw.begin(), raw.end());
  bool clean = false;
  EXPECT_EQ(ElementsToIntervals(Family::kV4, raw, SetSpec::Kind::kAllowNets, &clean), iv);
  EXPECT_TRUE(clean);
}

TEST(NftCodec, TwoStartsInARowAreNotClean) {
  std::vector<RawElement> raw = {{C("10.0.0.1").addr, false}, {C("10.0.0.5").addr, false}};
  bool clean = true;
  ElementsToIntervals(Family::kV4, raw, SetSpec::Kind::kAllowNets, &clean);
  EXPECT_FALSE(clean);
}

TEST(NftCodec, HostSetsHoldOneElementPerAddress) {
  std::vector<Interval> hosts, nets;
  SplitHostsAndNets(Family::kV4, {C("10.0.0.1"), C("10.0.0.2"), C("255.255.255.255")}, &hosts, &nets);
  ASSERT_EQ(hosts.size(), 3u);
  EXPECT_TRUE(hosts[2].to_max);
  auto raw = IntervalsToElements(hosts, SetSpec::Kind::kAllowHosts);
  ASSERT_EQ(raw.size(), 3u);  // no end elements, no merging of neighbours
  for (const auto& e : raw) EXPECT_FALSE(e.end);
  std::reverse(raw.begin(), raw.end());
  bool clean = false;
  EXPECT_EQ(ElementsToIntervals(Family::kV4, raw, SetSpec::Kind::kAllowHosts, &clean), hosts);
  EXPECT_TRUE(clean);
}

TEST(NftCodec, HostSetDumpsInBucketOrderAreSorted) {
  // 70,000 IPv4 hosts (radix-sorted) and a few IPv6 ones, in a shuffled (bucket) order; an
  // interval end in a host set is a shape mailward never makes.
  std::vector<Interval> hosts, nets;
  std::vector<Cidr> in;
  for (uint32_t i = 0; i < 70000; ++i) {
    Cidr c;
    uint32_t be = __builtin_bswap32(0x0a000000u + i * 37u);
    std::memcpy(c.addr.b.data(), &be, 4);
    in.push_back(c);
  }
  SplitHostsAndNets(Family::kV4, in, &hosts, &nets);
  auto raw = IntervalsToElements(hosts, SetSpec::Kind::kAllowHosts);
  std::mt19937 rng(7);
  std::shuffle(raw.begin(), raw.end(), rng);
  bool clean = false;
  EXPECT_EQ(ElementsToIntervals(Family::kV4, raw, SetSpec::Kind::kAllowHosts, &clean), hosts);
  EXPECT_TRUE(clean);
  raw.push_back({C("10.9.9.9").addr, true});
  auto with_end = ElementsToIntervals(Family::kV4, raw, SetSpec::Kind::kAllowHosts, &clean);
  EXPECT_FALSE(clean);
  EXPECT_EQ(with_end, hosts);

  std::vector<Interval> h6, n6;
  SplitHostsAndNets(Family::kV6, {C("2001:db8::9"), C("2001:db8::1"), C("2001:db8:1::")}, &h6, &n6);
  auto raw6 = IntervalsToElements(h6, SetSpec::Kind::kAllowHosts);
  std::reverse(raw6.begin(), raw6.end());
  EXPECT_EQ(ElementsToIntervals(Family::kV6, raw6, SetSpec::Kind::kAllowHosts, &clean), h6);
  EXPECT_TRUE(clean);
}

TEST(NftCodec, WrongKeyLengthIsMalformed) {
  std::vector<char> buf(4096);
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_NEWSETELEM, NFPROTO_INET, 0, 1);
  std::vector<RawElement> raw = {{C("10.0.0.1").addr, false}};
  PutElements(nlh, "s", Family::kV4, raw, 0, 1);
  std::vector<RawElement> parsed;
  EXPECT_FALSE(ParseElements(nlh, Family::kV6, &parsed));
}

/// Splits `raw` into element messages as the backend does and checks every one: the element
/// list fits its 16-bit length (no wrap), each message is as full as it can be, and the
/// messages together carry every element in order.
void CheckSplit(Family fam, const std::vector<RawElement>& raw, size_t* messages) {
  const std::string set = "allow_some_long_allowlist_name_nets_v6";
  const size_t list_at = NLMSG_HDRLEN + MNL_ALIGN(sizeof(nfgenmsg)) + MNL_ALIGN(MNL_ATTR_HDRLEN + std::strlen(kTable) + 1) +
                         MNL_ALIGN(MNL_ATTR_HDRLEN + set.size() + 1);
  std::vector<RawElement> back;
  *messages = 0;
  for (size_t i = 0; i < raw.size();) {
    std::vector<char> buf(NLMSG_HDRLEN + sizeof(nfgenmsg) + MaxElementMessageBytes(set) + 64);
    nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_NEWSETELEM, NFPROTO_INET, 0, 1);
    size_t next = PutElements(nlh, set, fam, raw, i, raw.size());
    ASSERT_GT(next, i);
    ++*messages;
    ASSERT_LE(nlh->nlmsg_len, buf.size());
    size_t list_bytes = nlh->nlmsg_len - list_at;  // the element list is the last attribute
    auto* list = reinterpret_cast<const nlattr*>(buf.data() + list_at);
    ASSERT_EQ(mnl_attr_get_type(list), NFTA_SET_ELEM_LIST_ELEMENTS);
    ASSERT_LE(list_bytes, kMaxAttrLen) << "message " << *messages;
    ASSERT_EQ(list->nla_len, list_bytes) << "the list's length wrapped";
    if (next < raw.size()) {  // full: the next element would not have fit
      ASSERT_GT(list_bytes + ElementBytes(fam, raw[next].end), kMaxAttrLen);
    }
    size_t before = back.size();
    ASSERT_TRUE(ParseElements(nlh, fam, &back));
    ASSERT_EQ(back.size() - before, next - i);
    i = next;
  }
  ASSERT_EQ(back.size(), raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    ASSERT_TRUE(back[i].key == raw[i].key) << i;
    ASSERT_EQ(back[i].end, raw[i].end) << i;
  }
}

std::vector<RawElement> Elements(Family fam, size_t n, bool intervals) {
  std::vector<RawElement> raw;
  for (size_t i = 0; i < n; ++i) {
    Addr a{};
    size_t len = AddrLen(fam);
    for (size_t b = 0; b < 4; ++b) a.b[len - 1 - b] = static_cast<uint8_t>(i >> (8 * b));
    raw.push_back({a, intervals && i % 2 == 1});
  }
  return raw;
}

TEST(NftCodec, ElementMessagesAreSplitByBytesNotByCount) {
  // IPv6 interval elements average 32 bytes: 2,048 of them (1,024 prefixes) overflowed a
  // 16-bit list length when messages were cut every 2,048 elements.
  struct Shape {
    Family fam;
    bool intervals;
    size_t per_message;  // elements that fill one list of at most 65,535 bytes
  };
  // IPv4 host 16 bytes, interval end 24; IPv6 host 28, end 36; plus the list's 4-byte header.
  for (const Shape& sh : {Shape{Family::kV4, false, (kMaxAttrLen - 4) / 16}, Shape{Family::kV6, false, (kMaxAttrLen - 4) / 28},
                          Shape{Family::kV4, true, 3276}, Shape{Family::kV6, true, 2047}}) {
    for (size_t n : {size_t{1}, sh.per_message - 1, sh.per_message, sh.per_message + 1, size_t{2048}, size_t{2049},
                     2 * sh.per_message, 2 * sh.per_message + 1, size_t{100000}}) {
      SCOPED_TRACE(std::string(sh.fam == Family::kV4 ? "v4 " : "v6 ") + (sh.intervals ? "intervals " : "hosts ") +
                   std::to_string(n));
      size_t messages = 0;
      CheckSplit(sh.fam, Elements(sh.fam, n, sh.intervals), &messages);
      EXPECT_EQ(messages, (n + sh.per_message - 1) / sh.per_message);
    }
  }
}

}  // namespace
}  // namespace mw::nft
