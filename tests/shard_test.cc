// Sharding of large host sets (model/ruleset.h): which shard an address goes to, and the
// sharded ruleset the nftables backend writes.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "fakes/cidr.h"
#include "model/ruleset.h"

namespace mw {
namespace {

using mw::testing::C;

Addr A(const char* s) { return C(s).addr; }

TEST(Shard, BitsGrowWithTheListAndStopAtTheMaximum) {
  EXPECT_EQ(ShardBits(0), 0u);
  EXPECT_EQ(ShardBits(kHostsPerShard), 0u);
  EXPECT_EQ(ShardBits(kHostsPerShard + 1), 1u);
  EXPECT_EQ(ShardBits(1'000'000), 5u);  // 32 shards of about 31,000
  EXPECT_EQ(ShardBits(50'000'000), kMaxShardBits);
}

TEST(Shard, MaskSpreadsOverTheLastOctets) {
  // IPv4: bit 0 of octets 4, 3, 2, then bit 1 of them...
  EXPECT_EQ(FormatAddr(Family::kV4, ShardMask(Family::kV4, 3)), "0.1.1.1");
  EXPECT_EQ(FormatAddr(Family::kV4, ShardMask(Family::kV4, 5)), "0.1.3.3");
  // IPv6: the end of the interface identifier and of the /64 prefix.
  EXPECT_EQ(FormatAddr(Family::kV6, ShardMask(Family::kV6, 4)), "::101:0:0:0:101");
}

TEST(Shard, EveryAddressMatchesExactlyItsOwnShardsValue) {
  for (Family f : {Family::kV4, Family::kV6}) {
    for (unsigned bits : {1u, 3u, 6u}) {
      Addr mask = ShardMask(f, bits);
      for (const char* text : {"10.0.0.1", "10.255.254.253", "192.0.2.77", "2001:db8::1", "2001:db8:ffff:1234::abcd"}) {
        Cidr c = C(text);
        if (c.family != f) continue;
        uint32_t own = ShardOf(f, bits, c.addr);
        ASSERT_LT(own, 1u << bits);
        for (uint32_t i = 0; i < (1u << bits); ++i) {
          Addr masked = c.addr;
          for (size_t k = 0; k < 16; ++k) masked.b[k] &= mask.b[k];
          EXPECT_EQ(masked == ShardValue(f, bits, i), i == own) << text << " shard " << i;
        }
      }
    }
  }
}

TEST(Shard, ListsOfOneEndingStillSpread) {
  // Gateways: every address ends in .1; the shards still fill from the other octets.
  std::set<uint32_t> used;
  for (int a = 0; a < 8; ++a)
    for (int b = 0; b < 8; ++b) {
      std::string t = "10." + std::to_string(a) + "." + std::to_string(b) + ".1";
      used.insert(ShardOf(Family::kV4, 6, A(t.c_str())));
    }
  EXPECT_GE(used.size(), 16u);
}

TEST(Shard, NamesRoundTrip) {
  EXPECT_EQ(ShardSetName("allow_big_hosts_v4", 7), "allow_big_hosts_v4_s7");
  EXPECT_EQ(ShardBaseName("allow_big_hosts_v4_s7"), "allow_big_hosts_v4");
  EXPECT_EQ(ShardBaseName("allow_big_hosts_v4"), "allow_big_hosts_v4");
  EXPECT_EQ(ShardBaseName("allow_x_s_hosts_v6"), "allow_x_s_hosts_v6");
}

Ruleset BigList(size_t n, std::vector<Cidr>* entries) {
  Policy p;
  PortPolicy imap;
  imap.name = "imap";
  imap.port = 143;
  imap.state = PortState::kClosed;
  imap.allow = {"big"};
  p.ports.push_back(imap);
  Allowlist big;
  big.name = "big";
  for (size_t i = 0; i < n; ++i) {
    std::string s = "10." + std::to_string(i >> 16 & 255) + "." + std::to_string(i >> 8 & 255) + "." + std::to_string(i & 255);
    big.entries.push_back(C(s.c_str()));
  }
  big.entries.push_back(C("10.200.0.0/16"));
  big.entries.push_back(C("2001:db8::/64"));
  *entries = big.entries;
  p.allowlists["big"] = big;
  return BuildRuleset(p);
}

TEST(Shard, SmallListsAreUnchanged) {
  std::vector<Cidr> entries;
  Ruleset rs = BigList(1000, &entries);
  Ruleset sh = ShardHostSets(rs);
  ASSERT_EQ(sh.sets.size(), rs.sets.size());
  for (size_t i = 0; i < rs.sets.size(); ++i) EXPECT_EQ(sh.sets[i].spec, rs.sets[i].spec);
  ASSERT_EQ(sh.rules.size(), rs.rules.size());
  for (size_t i = 0; i < rs.rules.size(); ++i) EXPECT_EQ(sh.rules[i].key, rs.rules[i].key);
}

TEST(Shard, LargeHostSetIsSplitAndEachRuleMatchesOneShard) {
  std::vector<Cidr> entries;
  Ruleset rs = BigList(100'000, &entries);
  Ruleset sh = ShardHostSets(rs);
  unsigned bits = ShardBits(100'000);
  ASSERT_EQ(bits, 2u);
  // Prefix sets stay whole; the host set becomes 4 shards holding every address once, each
  // in its shard, sorted, with a capacity for its own count.
  size_t hosts = 0;
  std::vector<std::string> names;
  for (const auto& s : sh.sets) {
    names.push_back(s.spec.name);
    if (s.spec.kind != SetSpec::Kind::kAllowHosts) continue;
    uint32_t index = static_cast<uint32_t>(std::stoul(s.spec.name.substr(s.spec.name.rfind("_s") + 2)));
    EXPECT_TRUE(std::is_sorted(s.intervals.begin(), s.intervals.end()));
    EXPECT_EQ(s.spec.size, HostsCapacity(s.intervals.size()));
    for (const auto& iv : s.intervals) ASSERT_EQ(ShardOf(Family::kV4, bits, iv.start), index);
    hosts += s.intervals.size();
  }
  EXPECT_EQ(hosts, 100'000u - 0);  // none of 10.0-1.x.x falls in 10.200.0.0/16
  EXPECT_EQ(names, (std::vector<std::string>{"allow_big_hosts_v4_s0", "allow_big_hosts_v4_s1", "allow_big_hosts_v4_s2",
                                             "allow_big_hosts_v4_s3", "allow_big_nets_v4", "allow_big_nets_v6"}));
  // The allow rule for the hosts became one rule per shard, in its place.
  std::vector<std::string> keys;
  for (const auto& r : sh.rules) keys.push_back(r.key);
  auto at = std::find(keys.begin(), keys.end(), "mailward:143:allow:big:hosts:ipv4:s0");
  ASSERT_NE(at, keys.end());
  for (int i = 1; i < 4; ++i) EXPECT_EQ(*(at + i), "mailward:143:allow:big:hosts:ipv4:s" + std::to_string(i));
  EXPECT_EQ(*(at + 4), "mailward:143:allow:big:nets:ipv4");
  const RuleSpec& r2 = sh.rules[static_cast<size_t>(at - keys.begin()) + 2];
  EXPECT_EQ(r2.saddr_set, "allow_big_hosts_v4_s2");
  ASSERT_TRUE(r2.shard_mask.has_value());
  EXPECT_EQ(*r2.shard_mask, ShardMask(Family::kV4, 2));
  EXPECT_EQ(r2.shard_value, ShardValue(Family::kV4, 2, 2));
  EXPECT_EQ(r2.Describe(), "tcp dport 143 ip saddr & 0.0.1.1 == 0.0.1.0 ip saddr @allow_big_hosts_v4_s2 accept");
}

}  // namespace
}  // namespace mw
