// The one three-valued lattice of the analysis layer: a match, a verdict or a claim is known
// true, known false, or undecided (depends on run-time state mailward cannot see).
#pragma once

#include <cstdint>

namespace mw::analysis {

enum class Tri : uint8_t { kNo, kMaybe, kYes };

/// Kleene conjunction: No wins, then Maybe.
constexpr Tri And(Tri a, Tri b) {
  if (a == Tri::kNo || b == Tri::kNo) return Tri::kNo;
  if (a == Tri::kMaybe || b == Tri::kMaybe) return Tri::kMaybe;
  return Tri::kYes;
}
/// Kleene disjunction: Yes wins, then Maybe.
constexpr Tri Or(Tri a, Tri b) {
  if (a == Tri::kYes || b == Tri::kYes) return Tri::kYes;
  if (a == Tri::kMaybe || b == Tri::kMaybe) return Tri::kMaybe;
  return Tri::kNo;
}
constexpr Tri Not(Tri a) { return a == Tri::kYes ? Tri::kNo : a == Tri::kNo ? Tri::kYes : Tri::kMaybe; }
constexpr Tri FromBool(bool b) { return b ? Tri::kYes : Tri::kNo; }

}  // namespace mw::analysis
