// A small, stable, non-cryptographic hash (FNV-1a, 32 bits): for generation fingerprints of
// command output and files, and for short derived names. Not for anything security-related.
#pragma once

#include <cstdint>
#include <string>

namespace mw {

inline uint32_t Fnv32(const std::string& s, uint32_t h = 2166136261u) {
  for (unsigned char c : s) h = (h ^ c) * 16777619u;
  return h;
}

}  // namespace mw
