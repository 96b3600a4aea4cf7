#include "plan/diff.h"

#include <gtest/gtest.h>

#include "fakes/cidr.h"

namespace mw {
namespace {

using mw::testing::C;

RuleSpec Rule(const std::string& key) {
  RuleSpec r;
  r.key = key;
  return r;
}

/// Desired: one allow set and three rules; bodies are their keys + "-body".
struct Fixture {
  Ruleset desired;
  std::vector<std::string> bodies;
  Fixture() {
    AddrSet s;
    s.spec.name = "allow_office_nets_v4";
    s.intervals = NormalizeToIntervals(Family::kV4, {C("10.0.0.1"), C("10.0.0.3"), C("10.1.0.0/16")});
    desired.sets.push_back(s);
    for (const char* k : {"a", "b", "c"}) {
      desired.rules.push_back(Rule(k));
      bodies.push_back(std::string(k) + "-body");
    }
  }
  LiveTable InSync() const {
    LiveTable t;
    t.exists = true;
    t.chain_exists = true;
    uint64_t h = 10;
    for (size_t i = 0; i < desired.rules.size(); ++i) t.rules.push_back({h++, desired.rules[i].key, bodies[i]});
    t.sets.push_back({desired.sets[0].spec, true, desired.sets[0].intervals});
    return t;
  }
};

TEST(Diff, MissingTableCreatesEverything) {
  Fixture f;
  Plan p = Diff(f.desired, f.bodies, LiveTable{});
  EXPECT_TRUE(p.create_table);
  EXPECT_TRUE(p.create_chain);
  EXPECT_EQ(p.create_sets.size(), 1u);
  ASSERT_EQ(p.elements.size(), 1u);
  EXPECT_EQ(p.elements[0].add.size(), 3u);
  EXPECT_EQ(p.add_rules.size(), 3u);
}

TEST(Diff, InSyncIsEmpty) {
  Fixture f;
  EXPECT_TRUE(Diff(f.desired, f.bodies, f.InSync()).empty());
}

TEST(Diff, OneAddressEditIsOneElement) {
  Fixture f;
  LiveTable live = f.InSync();
  auto& iv = live.sets[0].intervals;
  iv.erase(iv.begin() + 1);  // 10.0.0.3 missing live
  Plan p = Diff(f.desired, f.bodies, live);
  ASSERT_EQ(p.elements.size(), 1u);
  ASSERT_EQ(p.elements[0].add.size(), 1u);
  EXPECT_EQ(FormatInterval(Family::kV4, p.elements[0].add[0]), "10.0.0.3");
  EXPECT_TRUE(p.elements[0].remove.empty());
  EXPECT_TRUE(p.add_rules.empty());
  EXPECT_TRUE(p.delete_rules.empty());
}

TEST(Diff, ASetReadAsDesiredHasNoElementChanges) {
  // The verification read-back of the process's own write: the set's contents are not copied
  // (left empty) and count as the desired ones; its rules and spec are still compared.
  Fixture f;
  LiveTable live = f.InSync();
  live.sets[0].intervals.clear();
  live.sets[0].elements_as_desired = true;
  EXPECT_TRUE(Diff(f.desired, f.bodies, live).empty());
  live.rules.pop_back();
  Plan p = Diff(f.desired, f.bodies, live);
  EXPECT_TRUE(p.elements.empty());
  EXPECT_EQ(p.add_rules.size(), 1u);
  // Without the mark, the same empty set is three missing elements.
  live.sets[0].elements_as_desired = false;
  ASSERT_EQ(Diff(f.desired, f.bodies, live).elements.size(), 1u);
}

TEST(Diff, FlushedChainAddsRulesInOrder) {
  Fixture f;
  LiveTable live = f.InSync();
  live.rules.clear();
  Plan p = Diff(f.desired, f.bodies, live);
  ASSERT_EQ(p.add_rules.size(), 3u);
  for (const auto& r : p.add_rules) EXPECT_FALSE(r.before_handle);  // appended in order
  EXPECT_EQ(p.add_rules[0].spec.key, "a");
  EXPECT_EQ(p.add_rules[2].spec.key, "c");
}

TEST(Diff, MissingMiddleRuleIsInsertedBeforeItsSuccessor) {
  Fixture f;
  LiveTable live = f.InSync();
  live.rules.erase(live.rules.begin() + 1);  // "b" gone; "c" has handle 12
  Plan p = Diff(f.desired, f.bodies, live);
  ASSERT_EQ(p.add_rules.size(), 1u);
  EXPECT_EQ(p.add_rules[0].spec.key, "b");
  ASSERT_TRUE(p.add_rules[0].before_handle);
  EXPECT_EQ(*p.add_rules[0].before_handle, 12u);
  EXPECT_TRUE(p.delete_rules.empty());
}

TEST(Diff, HandAddedAndEditedRulesAreReplaced) {
  Fixture f;
  LiveTable live = f.InSync();
  live.rules.insert(live.rules.begin(), LiveRule{99, "", "tcp dport 143 accept"});
  live.rules[2].body = "edited";  // "b" edited in place
  Plan p = Diff(f.desired, f.bodies, live);
  ASSERT_EQ(p.delete_rules.size(), 2u);
  EXPECT_EQ(p.delete_rules[0].handle, 99u);
  EXPECT_EQ(p.delete_rules[1].handle, 11u);
  ASSERT_EQ(p.add_rules.size(), 1u);
  EXPECT_EQ(p.add_rules[0].spec.key, "b");
  EXPECT_EQ(*p.add_rules[0].before_handle, 12u);
}

TEST(Diff, ReorderedRulesKeepTheLongestRun) {
  Fixture f;
  LiveTable live = f.InSync();
  std::swap(live.rules[0], live.rules[2]);  // c b a
  Plan p = Diff(f.desired, f.bodies, live);
  EXPECT_EQ(p.delete_rules.size(), 2u);
  EXPECT_EQ(p.add_rules.size(), 2u);
}

TEST(Diff, UnknownSetIsDeletedAndMissingSetCreated) {
  Fixture f;
  LiveTable live = f.InSync();
  live.sets[0].spec.name = "allow_old_nets_v4";
  Plan p = Diff(f.desired, f.bodies, live);
  ASSERT_EQ(p.delete_sets.size(), 1u);
  EXPECT_EQ(p.delete_sets[0], "allow_old_nets_v4");
  ASSERT_EQ(p.create_sets.size(), 1u);
  EXPECT_EQ(p.create_sets[0].name, "allow_office_nets_v4");
}

TEST(Diff, ForeignShapesRecreateTheTable) {
  Fixture f;
  LiveTable live = f.InSync();
  live.foreign.push_back("chain sneaky");
  Plan p = Diff(f.desired, f.bodies, live);
  EXPECT_NE(p.recreate_reason.find("chain sneaky"), std::string::npos);
  EXPECT_EQ(p.add_rules.size(), 3u);

  live = f.InSync();
  live.sets[0].spec.kind = SetSpec::Kind::kMeter;
  EXPECT_FALSE(Diff(f.desired, f.bodies, live).recreate_reason.empty());

  live = f.InSync();
  live.chain_ok = false;
  EXPECT_FALSE(Diff(f.desired, f.bodies, live).recreate_reason.empty());
}

TEST(Diff, HostSetCapacityMayBeLargerButMustHoldTheList) {
  Ruleset d;
  AddrSet s;
  s.spec = {"allow_a_hosts_v4", Family::kV4, SetSpec::Kind::kAllowHosts, 0, HostsCapacity(3)};
  s.intervals = {HostInterval(Family::kV4, C("10.0.0.1").addr), HostInterval(Family::kV4, C("10.0.0.2").addr),
                 HostInterval(Family::kV4, C("10.0.0.3").addr)};
  d.sets.push_back(s);
  LiveTable live;
  live.exists = live.chain_exists = true;
  LiveSet ls{s.spec, true, s.intervals};
  live.sets.push_back(ls);
  EXPECT_TRUE(Diff(d, {}, live).empty());
  live.sets[0].spec.size = 4 * s.spec.size;  // grown earlier, list shrank since: kept
  EXPECT_TRUE(Diff(d, {}, live).recreate_reason.empty());
  live.sets[0].spec.size = 8 * s.spec.size;  // far too large: rebuilt
  EXPECT_FALSE(Diff(d, {}, live).recreate_reason.empty());
  live.sets[0].spec.size = 2;  // cannot hold the list: rebuilt
  EXPECT_FALSE(Diff(d, {}, live).recreate_reason.empty());
  live.sets[0].spec.size = 0;  // made without a capacity (resizable hash): rebuilt
  EXPECT_FALSE(Diff(d, {}, live).recreate_reason.empty());
  EXPECT_EQ(HostsCapacity(10), 1024u);
  EXPECT_EQ(HostsCapacity(100000), 262144u);
}

TEST(Diff, IntervalsDiffIsLinearMerge) {
  auto d = NormalizeToIntervals(Family::kV4, {C("10.0.0.1"), C("10.0.0.5"), C("10.0.0.9")});
  auto l = NormalizeToIntervals(Family::kV4, {C("10.0.0.1"), C("10.0.0.7"), C("10.0.0.9")});
  std::vector<Interval> add, remove;
  DiffIntervals(d, l, &add, &remove);
  ASSERT_EQ(add.size(), 1u);
  ASSERT_EQ(remove.size(), 1u);
  EXPECT_EQ(FormatInterval(Family::kV4, add[0]), "10.0.0.5");
  EXPECT_EQ(FormatInterval(Family::kV4, remove[0]), "10.0.0.7");
}

}  // namespace
}  // namespace mw
