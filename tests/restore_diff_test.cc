// rollback --dry-run's comparison of mailward's objects now with a snapshot's, and Plural.
#include "backend/nft/restore_diff.h"

#include <gtest/gtest.h>

#include "fakes/cidr.h"
#include "policy/address.h"
#include "util/text.h"

namespace mw {
namespace {

Interval Host(const char* a) { return NormalizeToIntervals(Family::kV4, {mw::testing::C(a)}).at(0); }

LiveSet Set(const std::string& name, std::vector<Interval> ivs, SetSpec::Kind kind = SetSpec::Kind::kAllowHosts) {
  LiveSet s;
  s.spec.name = name;
  s.spec.kind = kind;
  s.intervals = std::move(ivs);
  return s;
}

LiveRule Rule(const std::string& key, const std::string& text) {
  LiveRule r;
  r.key = key;
  r.text = text;
  return r;
}

LiveTable Table(std::vector<LiveRule> rules, std::vector<LiveSet> sets) {
  LiveTable t;
  t.exists = true;
  t.chain_exists = true;
  t.rules = std::move(rules);
  t.sets = std::move(sets);
  return t;
}

std::vector<std::string> Lines(const std::vector<Change>& cs) {
  std::vector<std::string> out;
  for (const auto& c : cs) {
    std::string l = std::string(ChangeOpName(c.op)) + " " + ChangeObjectName(c.object) + " " + c.name + " | " + c.detail;
    for (const auto& i : c.items) l += " " + i;
    out.push_back(l);
  }
  return out;
}

TEST(Plural, OneAndMany) {
  EXPECT_EQ(Plural(1, "finding"), "1 finding");
  EXPECT_EQ(Plural(0, "finding"), "0 findings");
  EXPECT_EQ(Plural(3, "allowlist"), "3 allowlists");
  EXPECT_EQ(Plural(1, "entry", "entries"), "1 entry");
  EXPECT_EQ(Plural(2, "entry", "entries"), "2 entries");
}

TEST(DescribeTableRestore, SameStateChangesNothing) {
  auto t = Table({Rule("mailward:143:closed", "tcp dport 143 ct state new drop")}, {Set("a", {Host("192.0.2.1")})});
  EXPECT_TRUE(DescribeTableRestore(t, t, PlanOptions{}).empty());
}

TEST(DescribeTableRestore, RulesAndElementsEachWay) {
  auto now = Table({Rule("mailward:143:open", "tcp dport 143 accept")},
                   {Set("allow_office_hosts_v4", {Host("192.0.2.1"), Host("192.0.2.9")}), Set("gone", {})});
  auto then = Table({Rule("mailward:143:closed", "tcp dport 143 ct state new drop")},
                    {Set("allow_office_hosts_v4", {Host("192.0.2.1"), Host("192.0.2.5")}), Set("new", {Host("198.51.100.7")})});
  auto lines = Lines(DescribeTableRestore(now, then, PlanOptions{}));
  std::vector<std::string> want = {
      "delete rule mailward:143:open | tcp dport 143 accept",
      "add rule mailward:143:closed | tcp dport 143 ct state new drop",
      "delete set gone | 0 entries",
      "delete elements allow_office_hosts_v4 | 1 entry 192.0.2.9",
      "add elements allow_office_hosts_v4 | 1 entry 192.0.2.5",
      "add set new | ",
      "add elements new | 1 entry 198.51.100.7",
  };
  EXPECT_EQ(lines, want);
}

TEST(DescribeTableRestore, OrderAloneIsOneReplace) {
  auto now = Table({Rule("a", "tcp dport 1 accept"), Rule("b", "tcp dport 2 drop")}, {});
  auto then = Table({Rule("b", "tcp dport 2 drop"), Rule("a", "tcp dport 1 accept")}, {});
  auto cs = DescribeTableRestore(now, then, PlanOptions{});
  ASSERT_EQ(cs.size(), 1u);
  EXPECT_EQ(cs[0].op, ChangeOp::kReplace);
}

TEST(DescribeTableRestore, SnapshotWithoutTableDeletesIt) {
  auto now = Table({Rule("a", "tcp dport 1 accept")}, {Set("s", {})});
  LiveTable then;
  auto cs = DescribeTableRestore(now, then, PlanOptions{});
  ASSERT_EQ(cs.size(), 1u);
  EXPECT_EQ(cs[0].op, ChangeOp::kDelete);
  EXPECT_EQ(cs[0].object, ChangeObject::kTable);
  EXPECT_NE(cs[0].detail.find("1 rule and 1 set"), std::string::npos) << cs[0].detail;
  EXPECT_TRUE(DescribeTableRestore(then, then, PlanOptions{}).empty());
}

TEST(DescribeTableRestore, NoTableNowAddsEverything) {
  LiveTable now;
  auto then = Table({Rule("a", "tcp dport 1 accept")}, {Set("s", {Host("192.0.2.3")})});
  auto lines = Lines(DescribeTableRestore(now, then, PlanOptions{}));
  std::vector<std::string> want = {"add table inet mailward | ", "add chain prerouting | ", "add rule a | tcp dport 1 accept",
                                   "add set s | ", "add elements s | 1 entry 192.0.2.3"};
  EXPECT_EQ(lines, want);
}

TEST(DescribeTableRestore, ItemsAreCappedButCounted) {
  std::vector<Interval> many;
  for (int i = 1; i <= 30; ++i) many.push_back(Host(("192.0.2." + std::to_string(i)).c_str()));
  auto now = Table({}, {Set("s", {})});
  auto then = Table({}, {Set("s", many)});
  PlanOptions o;
  o.max_items = 5;
  auto cs = DescribeTableRestore(now, then, o);
  ASSERT_EQ(cs.size(), 1u);
  EXPECT_EQ(cs[0].count, 30u);
  EXPECT_EQ(cs[0].items.size(), 5u);
}

TEST(DescribeLineRestore, RepeatsCount) {
  std::vector<Change> out;
  DescribeLineRestore({"-A X -j ACCEPT", "-A X -j ACCEPT"}, {"-A X -j ACCEPT"}, ChangeObject::kRule, "iptables", &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].op, ChangeOp::kDelete);
}

}  // namespace
}  // namespace mw
