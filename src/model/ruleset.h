// Backend-neutral model of what mailward owns: named address sets and an ordered list of rules
// in one input chain. Built from a Policy; nftables renders it 1:1, iptables and UFW map it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "policy/address.h"
#include "policy/policy.h"

namespace mw {

enum class Verdict : uint8_t { kAccept, kDrop, kReject };
const char* VerdictName(Verdict v);

/// A named set. An allowlist becomes, per family, a hash set of single addresses (O(1) to look
/// up and to change, however long the list) and an interval set of its prefixes; either is
/// made only when it has entries. Both hold their content as intervals (a host is [a, a+1)).
/// Meter sets are filled by the kernel (per-source rate-limit state) and never compared.
struct SetSpec {
  enum class Kind : uint8_t { kAllowHosts, kAllowNets, kMeter };
  std::string name;
  Family family = Family::kV4;
  Kind kind = Kind::kAllowNets;
  uint64_t timeout_ms = 0;  ///< meter sets: how long a source's state lives
  /// Meter sets: the most sources tracked. Host sets: their capacity, which makes the kernel
  /// use its fixed-size hash (about twice as fast to fill as the resizable one); the kernel
  /// refuses elements beyond it, so it is kept at least twice the list (see HostsCapacity).
  uint32_t size = 0;
  friend bool operator==(const SetSpec&, const SetSpec&) = default;
  bool is_allow() const { return kind != Kind::kMeter; }
};

struct AddrSet {
  SetSpec spec;
  std::vector<Interval> intervals;  ///< canonical: sorted, disjoint, non-adjacent
};

/// One rule of the chain. Every field is a match or the verdict; `key` is the stable identity
/// stored in the rule's comment ("mailward:143:allow:office:ipv4").
struct RuleSpec {
  std::string key;
  bool loopback = false;             ///< match input interface "lo"
  bool nonlocal_dest = false;        ///< match traffic NOT addressed to this host (fib daddr type)
  uint16_t port = 0;                 ///< 0: any port (only with loopback)
  std::optional<Family> family;      ///< match the network protocol
  std::string saddr_set;             ///< match the source address in this set
  /// With saddr_set: match only sources whose address, masked, equals shard_value (the one
  /// shard of a sharded allowlist this rule's set holds; see ShardHostSets).
  std::optional<Addr> shard_mask;
  Addr shard_value;
  bool ct_new = false;               ///< match new connections only
  std::string meter_set;             ///< update this meter set with the limit below
  std::optional<RateLimit> limit;    ///< with meter_set: matches sources over the limit
  Verdict verdict = Verdict::kAccept;
  /// A one-line nft-like description, for plans and messages.
  std::string Describe() const;
};

/// Everything mailward owns, in order.
struct Ruleset {
  std::vector<AddrSet> sets;
  std::vector<RuleSpec> rules;
  std::vector<uint16_t> open_ports;  ///< ports the policy keeps open (for conflict reports)
  const AddrSet* FindSet(const std::string& name) const;
};

/// Set names used for allowlists and meters.
std::string AllowSetName(const std::string& allowlist, SetSpec::Kind kind, Family f);

/// Splits the entries of one family into single addresses not covered by a prefix (as
/// one-address intervals) and the merged prefixes.
void SplitHostsAndNets(Family family, const std::vector<Cidr>& entries, std::vector<Interval>* hosts,
                       std::vector<Interval>* nets);
std::string MeterSetName(uint16_t port, Family f);

/// The capacity of a host set for `count` addresses: a power of two, at least 1024 and at least
/// twice the count, so that edits rarely cross it.
uint32_t HostsCapacity(size_t count);

/// Whether a live set can serve as the desired one: equal, except that a host set's capacity
/// may be larger than desired (up to 4x) as long as it holds `count` addresses.
bool SetCompatible(const SetSpec& desired, const SetSpec& live, size_t count);

/// Builds the desired ruleset of a valid policy. Pure.
Ruleset BuildRuleset(const Policy& policy);

/// Sharding of large host sets (nftables only; see doc/sharding.md). The kernel dumps a set
/// in chunks and walks it from the start for each one, so reading a set of n elements costs
/// O(n^2); split over k sets, each read costs (n/k)^2. Each shard holds the addresses whose
/// masked bits (a few low bits of the last octets, spread so that lists clustered on one
/// octet still spread) equal the shard's value; each packet does one set lookup.
inline constexpr size_t kHostsPerShard = 32768;
inline constexpr unsigned kMaxShardBits = 6;  ///< at most 64 shards

/// How many bits of shard index a host set of `count` addresses gets: the smallest b with
/// count <= kHostsPerShard * 2^b, at most kMaxShardBits.
unsigned ShardBits(size_t count);
/// The mask selecting `bits` shard bits of an address of the family.
Addr ShardMask(Family f, unsigned bits);
/// The masked value of shard `index` (the index's bits placed on the mask's bits).
Addr ShardValue(Family f, unsigned bits, uint32_t index);
/// The shard of an address.
uint32_t ShardOf(Family f, unsigned bits, const Addr& a);
/// The set name of shard `index` of host set `name`: name + "_s" + index. Allowlist set names
/// end in _v4/_v6, so a shard name never equals one.
std::string ShardSetName(const std::string& name, uint32_t index);
/// The host set a shard set name belongs to, or `name` itself when it names no shard.
std::string ShardBaseName(const std::string& name);

/// `rs` with every host set over kHostsPerShard addresses replaced by its shards, and every
/// rule matching it by one rule per shard (same place, key + ":s" + index). Pure.
Ruleset ShardHostSets(const Ruleset& rs);

}  // namespace mw
