// nftables rules for the reachability engine: each rule is run as the kernel runs it (a register
// machine over the flow's packet, conntrack and routing facts), with bytes that are known, unknown
// (undecidable here) or "the ordinary source" (see reach.h). Pure: rules come in as libnftnl
// objects the caller owns, set contents through NftSets.
#pragma once

#include <libnftnl/rule.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "analysis/reach.h"

namespace mw::analysis {

/// What a set lookup found.
struct SetHit {
  bool found = false;
  std::vector<uint8_t> data;  ///< maps: the element's data
  std::optional<int32_t> verdict;  ///< verdict maps
  std::string chain;               ///< verdict maps: jump/goto target
};

/// Named sets of the live ruleset.
class NftSets {
 public:
  virtual ~NftSets() = default;
  /// The key length of a set, or 0 when the set is unknown.
  virtual uint32_t KeyLen(uint32_t family, const std::string& table, const std::string& set) = 0;
  /// Looks `key` up; nullopt when it cannot be decided (unreadable, a shape not supported).
  virtual std::optional<SetHit> Lookup(uint32_t family, const std::string& table, const std::string& set,
                                       const std::vector<uint8_t>& key) = 0;
};

/// A chain as read from the kernel.
struct NftChainIn {
  uint32_t family = 0;  ///< NFPROTO_*
  std::string table;
  std::string name;
  bool base = false;
  uint32_t hook = 0;
  int32_t priority = 0;
  std::string type = "filter";  ///< "filter" | "nat" | "route"
  bool policy_drop = false;
  std::vector<std::string> devices;
  std::vector<const nftnl_rule*> rules;  ///< nullptr: a rule libnftnl could not parse
};

/// Adds the chains (grouped into their tables) to `topo`. Rules and `sets` must outlive it.
void AddNftTables(const std::vector<NftChainIn>& chains, std::shared_ptr<NftSets> sets, Topology* topo);

/// The rule in nft syntax, as far as mailward can render it (unknown expressions in libnftnl's
/// own notation).
std::string NftRuleText(const nftnl_rule* r);

/// "ip" | "ip6" | "inet" | "netdev" | "bridge" | "arp".
const char* NftFamilyName(uint32_t nfproto);

}  // namespace mw::analysis
