#include "policy/address.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>

#include "util/text.h"

namespace mw {

namespace {
/// Strict dotted quad ("198.51.100.7", no leading zeros); false for anything else, which then
/// goes to inet_pton (and its error message).
bool FastIpv4(std::string_view s, Addr* out) {
  int part = 0;
  size_t i = 0;
  while (part < 4) {
    if (i >= s.size() || s[i] < '0' || s[i] > '9') return false;
    unsigned v = 0;
    size_t start = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9' && i - start < 4) v = v * 10 + (s[i++] - '0');
    if (v > 255 || i - start > 3 || (s[start] == '0' && i - start > 1)) return false;
    out->b[part++] = static_cast<uint8_t>(v);
    if (part < 4) {
      if (i >= s.size() || s[i] != '.') return false;
      ++i;
    }
  }
  return i == s.size();
}
}  // namespace

bool ParseIpv4Host(std::string_view text, Addr* out) {
  Addr a;
  if (!FastIpv4(text, &a)) return false;
  *out = a;
  return true;
}

bool ParseCidr(std::string_view text, Cidr* out, std::string* error) {
  std::string_view addr_part = text;
  int prefix = -1;
  auto slash = text.find('/');
  if (slash != std::string_view::npos) {
    addr_part = text.substr(0, slash);
    std::string_view p = text.substr(slash + 1);
    if (p.empty() || p.size() > 3 || !std::all_of(p.begin(), p.end(), ::isdigit)) {
      *error = "bad prefix length '" + Excerpt(p, 8) + "' in '" + Excerpt(text) + "'";
      return false;
    }
    std::from_chars(p.data(), p.data() + p.size(), prefix);
  }
  Cidr c;
  if (prefix == -1 && FastIpv4(addr_part, &c.addr)) {  // the common case: one IPv4 host
    c.family = Family::kV4;
    c.prefix = 32;
    *out = c;
    return true;
  }
  char buf[INET6_ADDRSTRLEN + 1];
  if (addr_part.empty() || addr_part.size() >= sizeof buf) {
    *error = "'" + Excerpt(text) + "' is not an IPv4 or IPv6 address";
    return false;
  }
  std::memcpy(buf, addr_part.data(), addr_part.size());
  buf[addr_part.size()] = 0;
  if (FastIpv4(addr_part, &c.addr) || inet_pton(AF_INET, buf, c.addr.b.data()) == 1) {
    c.family = Family::kV4;
  } else if (inet_pton(AF_INET6, buf, c.addr.b.data()) == 1) {
    c.family = Family::kV6;
  } else {
    *error = "'" + Excerpt(text) + "' is not an IPv4 or IPv6 address";
    return false;
  }
  int max = c.family == Family::kV4 ? 32 : 128;
  if (prefix == -1) prefix = max;
  if (prefix > max) {
    *error = "prefix length /" + std::to_string(prefix) + " is too long for " +
             (c.family == Family::kV4 ? "IPv4 (at most /32)" : "IPv6 (at most /128)");
    return false;
  }
  c.prefix = static_cast<uint8_t>(prefix);
  // Host bits below the prefix must be zero.
  Addr net = c.addr;
  for (int bit = prefix; bit < max; ++bit) net.b[bit / 8] &= static_cast<uint8_t>(~(0x80 >> (bit % 8)));
  if (!(net == c.addr)) {
    *error = "'" + Excerpt(text) + "' has host bits set; did you mean " +
             FormatAddr(c.family, net) + "/" + std::to_string(prefix) + "?";
    return false;
  }
  *out = c;
  return true;
}

void RadixSort32(std::vector<uint32_t>& v) {
  std::vector<uint32_t> tmp(v.size());
  for (int shift : {0, 16}) {
    std::vector<uint32_t> count(65537, 0);
    for (uint32_t x : v) ++count[((x >> shift) & 0xffff) + 1];
    for (size_t i = 1; i < count.size(); ++i) count[i] += count[i - 1];
    for (uint32_t x : v) tmp[count[(x >> shift) & 0xffff]++] = x;
    v.swap(tmp);
  }
}

Interval HostInterval(Family family, const Addr& a) {
  Interval iv;
  iv.start = a;
  if (family == Family::kV4) {
    uint32_t be;
    std::memcpy(&be, a.b.data(), 4);
    uint32_t host = __builtin_bswap32(be);
    if (host == 0xffffffffu) {
      iv.to_max = true;
    } else {
      uint32_t next = __builtin_bswap32(host + 1);
      std::memcpy(iv.end.b.data(), &next, 4);
    }
    return iv;
  }
  bool ovf = false;
  iv.end = AddrNext(family, a, &ovf);
  if (ovf) {
    iv.end = Addr{};
    iv.to_max = true;
  }
  return iv;
}

bool CidrContains(const Cidr& net, const Cidr& a) {
  if (net.family != a.family) return false;
  for (int bit = 0; bit < net.prefix; ++bit) {
    uint8_t m = static_cast<uint8_t>(0x80 >> (bit % 8));
    if ((net.addr.b[bit / 8] & m) != (a.addr.b[bit / 8] & m)) return false;
  }
  return true;
}

Addr AddrNext(Family family, const Addr& a, bool* overflow) {
  Addr r = a;
  int n = static_cast<int>(AddrLen(family));
  for (int i = n - 1; i >= 0; --i) {
    if (++r.b[i] != 0) {
      *overflow = false;
      return r;
    }
  }
  *overflow = true;
  return r;
}

Addr AddrPrev(Family family, const Addr& a) {
  Addr r = a;
  int n = static_cast<int>(AddrLen(family));
  for (int i = n - 1; i >= 0; --i) {
    if (r.b[i]-- != 0) break;
  }
  return r;
}

std::vector<Interval> NormalizeToIntervals(Family family, const std::vector<Cidr>& cidrs) {
  // Closed ranges [first, last] first; merging them is simpler than half-open ones.
  struct Closed {
    Addr first, last;
    uint64_t key_hi, key_lo;  // `first` as integers, for a cheap sort
  };
  std::vector<Closed> ranges;
  ranges.reserve(cidrs.size());
  int max = family == Family::kV4 ? 32 : 128;
  for (const Cidr& c : cidrs) {
    if (c.family != family) continue;
    Closed r{c.addr, c.addr, c.addr.hi(), c.addr.lo()};
    for (int bit = c.prefix; bit < max; ++bit) r.last.b[bit / 8] |= static_cast<uint8_t>(0x80 >> (bit % 8));
    ranges.push_back(r);
  }
  auto by_first = [](const Closed& x, const Closed& y) {
    return x.key_hi != y.key_hi ? x.key_hi < y.key_hi : x.key_lo < y.key_lo;
  };
  if (!std::is_sorted(ranges.begin(), ranges.end(), by_first)) std::sort(ranges.begin(), ranges.end(), by_first);
  std::vector<Interval> out;
  out.reserve(ranges.size());
  size_t i = 0;
  while (i < ranges.size()) {
    Addr first = ranges[i].first, last = ranges[i].last;
    size_t j = i + 1;
    for (; j < ranges.size(); ++j) {
      bool ovf = false;
      Addr after = AddrNext(family, last, &ovf);
      if (ovf) {  // `last` is the top address: everything after merges in.
        continue;
      }
      if (ranges[j].first > after) break;
      if (ranges[j].last > last) last = ranges[j].last;
    }
    Interval iv;
    iv.start = first;
    bool ovf = false;
    iv.end = AddrNext(family, last, &ovf);
    if (ovf) {
      iv.to_max = true;
      iv.end = Addr{};
    }
    out.push_back(iv);
    i = j;
  }
  return out;
}

std::string FormatAddr(Family family, const Addr& a) {
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(family == Family::kV4 ? AF_INET : AF_INET6, a.b.data(), buf, sizeof buf);
  return buf;
}

std::string FormatInterval(Family family, const Interval& iv) {
  int max = family == Family::kV4 ? 32 : 128;
  Addr last = iv.to_max ? Addr{} : AddrPrev(family, iv.end);
  if (iv.to_max) {
    for (size_t i = 0; i < AddrLen(family); ++i) last.b[i] = 0xff;
  }
  if (last == iv.start) return FormatAddr(family, iv.start);
  // Is it exactly one prefix? Find the prefix whose network is start and broadcast is last.
  for (int p = max - 1; p >= 0; --p) {
    Addr net = iv.start, bcast = iv.start;
    for (int bit = p; bit < max; ++bit) {
      net.b[bit / 8] &= static_cast<uint8_t>(~(0x80 >> (bit % 8)));
      bcast.b[bit / 8] |= static_cast<uint8_t>(0x80 >> (bit % 8));
    }
    if (!(net == iv.start)) break;
    if (bcast == last) return FormatAddr(family, iv.start) + "/" + std::to_string(p);
    if (bcast > last) break;
  }
  return FormatAddr(family, iv.start) + "-" + FormatAddr(family, last);
}

}  // namespace mw

namespace mw {

std::vector<Cidr> IntervalToCidrs(Family family, const Interval& iv) {
  const int max = family == Family::kV4 ? 32 : 128;
  std::vector<Cidr> out;
  Addr cur = iv.start;
  auto bit_set = [](const Addr& a, int bit) { return (a.b[bit / 8] >> (7 - bit % 8)) & 1; };
  while (true) {
    // The largest prefix starting at `cur` (aligned) that stays inside the interval.
    int prefix = max;
    for (int p = max - 1; p >= 0; --p) {
      if (bit_set(cur, p)) break;  // not aligned beyond this
      Addr last = cur;
      for (int bit = p; bit < max; ++bit) last.b[bit / 8] |= static_cast<uint8_t>(0x80 >> (bit % 8));
      if (!iv.to_max) {
        Addr end_last = AddrPrev(family, iv.end);
        if (last > end_last) break;
      }
      prefix = p;
    }
    out.push_back(Cidr{family, cur, static_cast<uint8_t>(prefix)});
    Addr last = cur;
    for (int bit = prefix; bit < max; ++bit) last.b[bit / 8] |= static_cast<uint8_t>(0x80 >> (bit % 8));
    bool overflow = false;
    Addr next = AddrNext(family, last, &overflow);
    if (overflow) break;
    if (!iv.to_max && !(next < iv.end)) break;
    cur = next;
  }
  return out;
}

std::string FormatCidr(const Cidr& c) {
  const int max = c.family == Family::kV4 ? 32 : 128;
  return c.prefix == max ? FormatAddr(c.family, c.addr) : FormatAddr(c.family, c.addr) + "/" + std::to_string(c.prefix);
}

}  // namespace mw
