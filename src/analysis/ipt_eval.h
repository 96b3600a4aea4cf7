// iptables rules for the reachability engine: the tables of iptables-save output (raw, mangle,
// nat, filter, security) become engine tables at the kernel's hook priorities, each rule decided
// by its matches and targets. Pure: the text and the ipset contents come in as arguments.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "analysis/reach.h"

namespace mw::analysis {

/// ipset contents, by set name ("ipset save" output).
struct Ipsets {
  struct Set {
    Family family = Family::kV4;
    std::string type;            ///< "hash:ip", "hash:net", "hash:ip,port", ...
    std::vector<Cidr> entries;   ///< for address sets; other shapes keep `decidable` false
    bool decidable = true;
  };
  std::map<std::string, Set> sets;
};

/// Parses `ipset save` output.
Ipsets ParseIpsetSave(const std::string& text);

/// Adds every table of `save_text` (iptables-save or ip6tables-save output) to `topo`.
void AddIptablesTables(const std::string& save_text, Family family, bool legacy,
                       std::shared_ptr<const Ipsets> ipsets, Topology* topo);

/// Splits a rule line into words, honouring iptables-save's double quotes.
std::vector<std::string> SplitIptablesWords(const std::string& line);

}  // namespace mw::analysis
