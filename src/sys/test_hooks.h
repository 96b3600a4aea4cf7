// Test hooks for the integration tests' crash-safety and fault tests against a real kernel.
// Each calls a weak symbol that only the test library tests/hooks/test_hooks.cc defines (the
// tests preload it with LD_PRELOAD); in production the symbols are null and every hook does
// nothing. No environment variable is read here: faults reach unit tests through the fakes
// (tests/fakes/fake_env.h), and the real kernel's tests through this library.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace mw::sys {

/// A failure the test library injects instead of running `argv` (the message to report), or
/// nullopt: run it. RealEnv().Run asks before every program.
std::optional<std::string> InjectedRunFailure(const std::vector<std::string>& argv);

/// Whether the test library injects the fault named `name` at this point ("state-dir").
bool InjectedFault(const char* name);

/// After a backend's commit: the test library may hold the process here (it waits on a flag
/// file in `state_dir`) so a test can commit from another process before the read-back.
void AfterCommitHook(const std::string& state_dir);

/// Calls mailward_test_pause_point(point) when a test preloads the library that defines it (it
/// stops the process there so a test can kill it at exactly that moment); does nothing
/// otherwise. It never changes what a command does.
void TestPausePoint(const char* point);

}  // namespace mw::sys
