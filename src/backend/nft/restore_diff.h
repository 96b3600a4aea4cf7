// What a rollback would change, before it does (`mailward rollback --dry-run`): a pure
// comparison of mailward's objects now with those a snapshot holds, as plan lines.
#pragma once

#include <string>
#include <vector>

#include "backend/backend.h"
#include "plan/diff.h"

namespace mw {

/// The changes that turn mailward's nftables table `now` into `then` (a snapshot's): the table
/// and chain, rules by their text (a changed order reads as one "replace"), sets by name and
/// their elements. At most opts.max_items addresses are listed per element change.
std::vector<Change> DescribeTableRestore(const LiveTable& now, const LiveTable& then, const PlanOptions& opts);

/// The changes that turn the lines `now` into `then` (iptables rules, UFW rules, ipset
/// entries), as "delete"/"add" of `object` under `name`; a changed order alone reads as one
/// "replace". Lines are compared as text.
void DescribeLineRestore(const std::vector<std::string>& now, const std::vector<std::string>& then,
                         ChangeObject object, const std::string& name, std::vector<Change>* out);

}  // namespace mw
