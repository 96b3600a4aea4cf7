// IP addresses, CIDR prefixes and the disjoint intervals that nftables interval sets hold.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace mw {

enum class Family : uint8_t { kV4, kV6 };

inline const char* FamilyName(Family f) { return f == Family::kV4 ? "ipv4" : "ipv6"; }
inline size_t AddrLen(Family f) { return f == Family::kV4 ? 4 : 16; }

/// An address in network byte order; IPv4 uses the first 4 bytes, the rest stay zero.
struct Addr {
  std::array<uint8_t, 16> b{};
  /// The address as two big-endian halves: comparisons in two integer steps (sorting 100,000
  /// addresses byte by byte through memcmp costs tens of milliseconds).
  uint64_t hi() const {
    uint64_t v;
    std::memcpy(&v, b.data(), 8);
    return __builtin_bswap64(v);
  }
  uint64_t lo() const {
    uint64_t v;
    std::memcpy(&v, b.data() + 8, 8);
    return __builtin_bswap64(v);
  }
  friend bool operator==(const Addr& x, const Addr& y) { return std::memcmp(x.b.data(), y.b.data(), 16) == 0; }
  friend std::strong_ordering operator<=>(const Addr& x, const Addr& y) {
    uint64_t xh = x.hi(), yh = y.hi();
    if (xh != yh) return xh <=> yh;
    return x.lo() <=> y.lo();
  }
};

struct Cidr {
  Family family = Family::kV4;
  Addr addr;
  uint8_t prefix = 32;
};

/// Parses "198.51.100.7", "198.51.100.0/24", "2001:db8::/32". Host bits set below the prefix are
/// an error (the message suggests the network). On failure returns false and sets *error.
bool ParseCidr(std::string_view text, Cidr* out, std::string* error);

/// The fast path of ParseCidr for the common line of a big allowlist: exactly a dotted-quad
/// IPv4 address, no leading zeros, nothing around it. False for anything else (which ParseCidr
/// then takes, with its error messages); *out untouched then.
bool ParseIpv4Host(std::string_view text, Addr* out);

/// Whether `net` contains the address `a` (same family, equal in the first net.prefix bits).
bool CidrContains(const Cidr& net, const Cidr& a);

/// A half-open range [start, end) of one family; `to_max` means the range reaches the family's
/// last address (then `end` is unused).
struct Interval {
  Addr start;
  Addr end;
  bool to_max = false;
  friend bool operator==(const Interval&, const Interval&) = default;
  friend auto operator<=>(const Interval&, const Interval&) = default;
};

/// Sorts and merges the prefixes of one family into disjoint, non-adjacent intervals: the
/// canonical content of an interval set (what the kernel would hold after nft's auto-merge).
std::vector<Interval> NormalizeToIntervals(Family family, const std::vector<Cidr>& cidrs);

/// Formats an address of the family.
std::string FormatAddr(Family family, const Addr& a);
/// Formats an interval as a single address, a CIDR when it is one, else "first-last".
std::string FormatInterval(Family family, const Interval& iv);

/// Sorts 32-bit keys (IPv4 addresses as host-order integers): an LSD radix sort in two 16-bit
/// passes, linear, where std::sort of 100,000 addresses costs several milliseconds.
void RadixSort32(std::vector<uint32_t>& v);

/// The one-address interval [a, a+1) (to_max for the family's last address). Fast for IPv4:
/// it runs once per host of a 100,000-address list.
Interval HostInterval(Family family, const Addr& a);

/// Returns a+1; sets *overflow when a was the family's last address.
Addr AddrNext(Family family, const Addr& a, bool* overflow);
/// Returns a-1 (a must not be zero).
Addr AddrPrev(Family family, const Addr& a);

}  // namespace mw

namespace mw {
/// The fewest prefixes that cover exactly the interval (what an ipset hash:net holds).
std::vector<Cidr> IntervalToCidrs(Family family, const Interval& iv);
/// "a.b.c.d" for a full-length prefix, "a.b.c.d/n" otherwise.
std::string FormatCidr(const Cidr& c);
}  // namespace mw
