// Test helpers: the desired ruleset of a policy text, and the office scenario the backend tests
// share (an allowlist of a /24, a host and an IPv6 /48 on 143; 993 open; 110 rejected).
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "model/ruleset.h"
#include "policy/policy.h"

namespace mw::testing {

/// BuildRuleset of a policy text, failing the test when the text is no valid policy.
inline Ruleset FromYaml(const std::string& yaml) {
  auto p = ParsePolicyText(yaml, "test.yaml");
  EXPECT_TRUE(p.ok()) << p.status().message();
  return BuildRuleset(*p);
}

inline constexpr const char* kOfficePolicy = R"(version: 1
allowlists:
  office: [198.51.100.0/24, 203.0.113.7, "2001:db8::/48"]
ports:
  imap: {state: closed, allow: [office]}
  imaps: {state: open}
  pop3: {state: closed, action: reject}
)";

}  // namespace mw::testing
