// Phase timings on stderr when MAILWARD_TIMING is set: where a run spends its time.
#pragma once

#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace mw {

class Phase {
 public:
  explicit Phase(const char* name) : name_(name), start_(std::chrono::steady_clock::now()) {}
  ~Phase() {
    static const bool on = std::getenv("MAILWARD_TIMING") != nullptr;
    if (!on) return;
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_).count();
    std::fprintf(stderr, "timing: %-24s %8.2f ms\n", name_, ms);
  }

 private:
  const char* name_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace mw
