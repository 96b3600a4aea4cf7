// Diff(desired, live) -> Plan: the smallest set of changes that turns mailward's live table
// into the desired one. Pure: no I/O; rules are compared by their rendered bodies, which the
// backend computes (see nft_codec.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model/ruleset.h"

namespace mw {

/// A rule as read from the kernel.
struct LiveRule {
  uint64_t handle = 0;
  std::string key;   ///< its mailward comment, empty when none
  std::string body;  ///< canonical rendering of its expressions
  std::string text;  ///< the rule in nft syntax, for people (plans, deletions)
};

/// A set as read from the kernel.
struct LiveSet {
  SetSpec spec;
  bool spec_known = true;            ///< false: a set of a shape mailward never makes
  std::vector<Interval> intervals;   ///< allow sets only
  /// Its elements are the desired set's own (the verification read-back of the same process's
  /// commit, nobody else committed since): no element changes, and `intervals` is left empty.
  bool elements_as_desired = false;
};

/// mailward's table as read from the kernel.
struct LiveTable {
  bool exists = false;
  uint64_t handle = 0;
  bool chain_exists = false;
  bool chain_ok = true;                   ///< hook, priority, type and policy as mailward makes them
  std::vector<LiveRule> rules;            ///< the chain's rules, in order
  std::vector<LiveSet> sets;
  std::vector<std::string> foreign;       ///< other chains / objects found in the table
};

struct ElementChange {
  std::string set;
  Family family = Family::kV4;
  SetSpec::Kind kind = SetSpec::Kind::kAllowNets;
  std::vector<Interval> add;
  std::vector<Interval> remove;
};

struct RuleAdd {
  RuleSpec spec;
  std::string body;
  /// Insert before this live rule; none: append at the end of the chain.
  std::optional<uint64_t> before_handle;
};

struct Plan {
  /// Non-empty: the table is too far from anything mailward makes (a foreign chain, a set of the
  /// wrong type...) and is deleted and recreated in the same batch. The other fields then
  /// describe the full recreation.
  std::string recreate_reason;
  /// `mailward remove`: the table goes, with everything in it; nothing else is done.
  bool delete_table = false;
  bool create_table = false;
  bool create_chain = false;
  std::vector<LiveRule> delete_rules;
  std::vector<SetSpec> create_sets;
  std::vector<std::string> delete_sets;
  std::vector<ElementChange> elements;
  std::vector<RuleAdd> add_rules;

  bool empty() const {
    return recreate_reason.empty() && !delete_table && !create_table && !create_chain && delete_rules.empty() &&
           create_sets.empty() && delete_sets.empty() && elements.empty() && add_rules.empty();
  }
};

/// The rendered body of each desired rule, same order as desired.rules.
Plan Diff(const Ruleset& desired, const std::vector<std::string>& desired_bodies,
          const LiveTable& live);

/// Diff of two canonical interval lists: what to add to `live` and remove from it to get
/// `desired`. Linear in the sizes.
void DiffIntervals(const std::vector<Interval>& desired, const std::vector<Interval>& live,
                   std::vector<Interval>* add, std::vector<Interval>* remove);

}  // namespace mw
