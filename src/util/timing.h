// Phase timings on stderr when MAILWARD_TIMING is set: where a run spends its time. Each line
// gives the phase's length and when it ended, counted from the first phase of the run.
#pragma once

#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace mw {

class Phase {
 public:
  explicit Phase(const char* name) : name_(name), start_(std::chrono::steady_clock::now()) { (void)Origin(); }
  ~Phase() {
    static const bool on = std::getenv("MAILWARD_TIMING") != nullptr;
    if (!on) return;
    auto now = std::chrono::steady_clock::now();
    double ms = std::chrono::duration<double, std::milli>(now - start_).count();
    double at = std::chrono::duration<double, std::milli>(now - Origin()).count();
    std::fprintf(stderr, "timing: %-24s %8.2f ms  (at %.2f ms)\n", name_, ms, at);
  }

 private:
  static std::chrono::steady_clock::time_point Origin() {
    static const auto origin = std::chrono::steady_clock::now();
    return origin;
  }
  const char* name_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace mw
