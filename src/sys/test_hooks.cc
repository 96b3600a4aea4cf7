#include "sys/test_hooks.h"

// Defined only by tests/hooks/test_hooks.cc (preloaded by the integration tests).
extern "C" const char* mailward_test_fail_run(const char* const* argv, int argc) __attribute__((weak));
extern "C" int mailward_test_fault(const char* name) __attribute__((weak));
extern "C" void mailward_test_after_commit(const char* state_dir) __attribute__((weak));
extern "C" void mailward_test_pause_point(const char* point) __attribute__((weak));

namespace mw::sys {

std::optional<std::string> InjectedRunFailure(const std::vector<std::string>& argv) {
  if (!mailward_test_fail_run || argv.empty()) return std::nullopt;
  std::vector<const char*> args;
  for (const auto& a : argv) args.push_back(a.c_str());
  const char* msg = mailward_test_fail_run(args.data(), static_cast<int>(args.size()));
  if (!msg) return std::nullopt;
  return std::string(msg);
}

bool InjectedFault(const char* name) { return mailward_test_fault && mailward_test_fault(name) != 0; }

void AfterCommitHook(const std::string& state_dir) {
  if (mailward_test_after_commit && !state_dir.empty()) mailward_test_after_commit(state_dir.c_str());
}

void TestPausePoint(const char* point) {
  if (mailward_test_pause_point) mailward_test_pause_point(point);
}

}  // namespace mw::sys
