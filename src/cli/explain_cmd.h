// `mailward explain PORT --from ADDR`: one connection walked through every table and hook of
// the live firewall (analysis/reach.h), step by step like `nft monitor trace`, and judged against
// the policy when there is one.
#pragma once

#include <cstdint>
#include <string>

#include "cli/commands.h"

namespace mw {

struct ExplainOptions {
  uint16_t port = 0;
  std::string from;    ///< the source address
  std::string family;  ///< "", "ipv4", "ipv6": must agree with `from`
  std::string iif;     ///< the interface it arrives on ("": the first non-loopback one)
};

/// Exit 0: the verdict is what the policy says (or there is no policy); 2: it is not; 1: error.
int CmdExplain(const GlobalOptions& g, const ExplainOptions& o);

}  // namespace mw
