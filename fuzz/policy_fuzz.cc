// libFuzzer target: the policy loader must reject any input with an error, never crash or hang.
#include <cstddef>
#include <cstdint>
#include <string>

#include "model/ruleset.h"
#include "policy/policy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto p = mw::ParsePolicyText(text, "fuzz.yaml");
  if (p.ok()) (void)mw::BuildRuleset(*p);
  return 0;
}
