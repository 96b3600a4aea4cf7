// Would anything outside mailward still block a port the policy keeps open? Evaluates the
// other tables' input-path base chains against a synthetic packet (a new TCP connection to the
// port from an ordinary, non-loopback source) with three-valued logic: a match mailward cannot
// decide makes the rule "may block", never a silent pass. Pure: rules come in as parsed
// libnftnl objects, named-set contents through a callback.
#pragma once

#include <libnftnl/rule.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "policy/address.h"

namespace mw::nft {

struct ChainInfo {
  uint32_t family = 0;  ///< NFPROTO_*
  std::string table;
  std::string name;
  bool base = false;
  uint32_t hook = 0;
  int32_t priority = 0;
  uint32_t policy = 1;  ///< NF_ACCEPT / NF_DROP
  std::vector<const nftnl_rule*> rules;  ///< nullptr: a rule libnftnl could not parse
};

/// Answers "is `key` in set `set` of table (family, table)?"; nullopt when unknown.
using SetLookup = std::function<std::optional<bool>(uint32_t family, const std::string& table,
                                                    const std::string& set,
                                                    const std::vector<uint8_t>& key)>;

/// Conflicts for TCP `port` over `family` among `chains` (mailward's own table excluded by the
/// caller).
std::vector<Conflict> FindConflicts(const std::vector<ChainInfo>& chains, uint16_t port,
                                    Family family, const SetLookup& lookup);

}  // namespace mw::nft
