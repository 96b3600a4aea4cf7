// Translation between mailward's model and nf_tables objects: rules and sets built with
// libnftnl, set elements encoded and decoded directly (the hot path at 100,000 addresses).
// Pure: nothing here does I/O, so it is tested without a kernel.
#pragma once

#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <linux/netlink.h>

#include <memory>
#include <string>
#include <vector>

#include "model/ruleset.h"

namespace mw::nft {

inline constexpr const char* kTable = "mailward";
/// mailward's one chain: on the prerouting hook, before DNAT (dstnat, -100), so a closed port
/// holds for connections to this host whether they end in a local socket or are forwarded to a
/// container (Docker's `-p`). Its rules only judge traffic to this host's own addresses.
inline constexpr const char* kChain = "prerouting";
inline constexpr int kChainPriority = -150;  // "mangle": after conntrack (-200), before dstnat

struct RuleDeleter {
  void operator()(nftnl_rule* r) const { nftnl_rule_free(r); }
};
struct SetDeleter {
  void operator()(nftnl_set* s) const { nftnl_set_free(s); }
};
using RulePtr = std::unique_ptr<nftnl_rule, RuleDeleter>;
using SetPtr = std::unique_ptr<nftnl_set, SetDeleter>;

/// The nf_tables rule for a RuleSpec in inet mailward / input, its key in the comment.
RulePtr BuildRule(const RuleSpec& spec);

/// Canonical text of a rule's expressions ("meta load l4proto => reg 1; cmp eq reg 1 ...").
/// Identical for a rule built by BuildRule and the same rule read back from the kernel.
std::string RenderBody(const nftnl_rule* rule);
std::string RenderBody(const RuleSpec& spec);

/// The rule's comment (user data), or "".
std::string RuleComment(const nftnl_rule* rule);

/// The nf_tables set for a SetSpec.
SetPtr BuildSet(const SetSpec& spec);

/// Reads a kernel set into a SetSpec; false when the set has a shape mailward never makes.
bool ParseSetSpec(const nftnl_set* set, SetSpec* out);

/// One element as the kernel holds it: a key and whether it closes an interval.
struct RawElement {
  Addr key;
  bool end = false;
};

/// The largest payload an attribute can carry: its length field has 16 bits. The element
/// list of one message is one nested attribute, so it must fit (nftables'
/// mnl_nft_attr_nest_overflow splits at the same bound).
inline constexpr size_t kMaxAttrLen = 0xffff;

/// Appends NFTA_SET_ELEM_LIST_* attributes for as many elements from `begin` (before `end`) of
/// `elems` as fit in one element list of at most kMaxAttrLen bytes; returns the index of the
/// first element not written (== end when all were). Writes at least one element.
/// The message grows by at most MaxElementMessageBytes(set).
size_t PutElements(nlmsghdr* nlh, const std::string& set, Family family,
                   const std::vector<RawElement>& elems, size_t begin, size_t end);
/// Bytes one element needs in a message (its NFTA_LIST_ELEM attribute, aligned).
size_t ElementBytes(Family family, bool interval_end);
/// The most bytes PutElements adds to a message for this set.
size_t MaxElementMessageBytes(const std::string& set);

/// The raw elements (start, then end unless it reaches the top) of intervals.
/// For a hash set of hosts, only the starts.
std::vector<RawElement> IntervalsToElements(const std::vector<Interval>& intervals, SetSpec::Kind kind);

/// Appends the elements of one NFT_MSG_NEWSETELEM message to *out. Returns false on a
/// malformed message.
bool ParseElements(const nlmsghdr* nlh, Family family, std::vector<RawElement>* out);

/// Rebuilds intervals from raw elements exactly as stored (no merging, so every interval can be
/// deleted by its own elements). A lone end element (nft's 0.0.0.0 marker) is ignored.
/// *clean is false when two starts follow each other (a shape only a full rewrite can fix).
/// For a hash set of hosts, every element is a one-address interval.
std::vector<Interval> ElementsToIntervals(Family family, std::vector<RawElement> elems, SetSpec::Kind kind,
                                          bool* clean);

}  // namespace mw::nft
