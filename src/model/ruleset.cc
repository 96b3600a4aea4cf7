#include "model/ruleset.h"

#include <algorithm>
#include <cstring>

namespace mw {

const char* VerdictName(Verdict v) {
  switch (v) {
    case Verdict::kAccept: return "accept";
    case Verdict::kDrop: return "drop";
    case Verdict::kReject: return "reject with tcp reset";
  }
  return "?";
}

std::string AllowSetName(const std::string& allowlist, SetSpec::Kind kind, Family f) {
  return "allow_" + allowlist + (kind == SetSpec::Kind::kAllowHosts ? "_hosts" : "_nets") +
         (f == Family::kV4 ? "_v4" : "_v6");
}

namespace {

}  // namespace

void SplitHostsAndNets(Family family, const std::vector<Cidr>& entries, std::vector<Interval>* hosts,
                       std::vector<Interval>* nets) {
  const uint8_t max = family == Family::kV4 ? 32 : 128;
  std::vector<Cidr> prefixes;
  std::vector<Addr> singles;
  if (family == Family::kV4) {
    std::vector<uint32_t> keys;
    keys.reserve(entries.size());
    for (const auto& c : entries) {
      if (c.family != family) continue;
      if (c.prefix == max) keys.push_back(static_cast<uint32_t>(c.addr.hi() >> 32));
      else prefixes.push_back(c);
    }
    RadixSort32(keys);
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    *nets = NormalizeToIntervals(family, prefixes);
    if (nets->empty()) {  // the common case: straight from the sorted keys
      hosts->clear();
      hosts->reserve(keys.size());
      for (uint32_t k : keys) {
        Addr a;
        uint32_t be = __builtin_bswap32(k);
        std::memcpy(a.b.data(), &be, 4);
        hosts->push_back(HostInterval(family, a));
      }
      return;
    }
    singles.resize(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      uint32_t be = __builtin_bswap32(keys[i]);
      std::memcpy(singles[i].b.data(), &be, 4);
    }
  } else {
    for (const auto& c : entries) {
      if (c.family != family) continue;
      if (c.prefix == max) singles.push_back(c.addr);
      else prefixes.push_back(c);
    }
    if (!std::is_sorted(singles.begin(), singles.end())) std::sort(singles.begin(), singles.end());
    singles.erase(std::unique(singles.begin(), singles.end()), singles.end());
    *nets = NormalizeToIntervals(family, prefixes);
  }
  hosts->clear();
  hosts->reserve(singles.size());
  for (const Addr& a : singles) {
    // A host inside a listed prefix is already allowed: keep the canonical form minimal.
    if (!nets->empty()) {
      auto it = std::upper_bound(nets->begin(), nets->end(), a,
                                 [](const Addr& x, const Interval& n) { return x < n.start; });
      if (it != nets->begin() && (std::prev(it)->to_max || a < std::prev(it)->end)) continue;
    }
    hosts->push_back(HostInterval(family, a));
  }
}

std::string MeterSetName(uint16_t port, Family f) {
  return "meter_" + std::to_string(port) + (f == Family::kV4 ? "_v4" : "_v6");
}

const AddrSet* Ruleset::FindSet(const std::string& name) const {
  for (const auto& s : sets)
    if (s.spec.name == name) return &s;
  return nullptr;
}

std::string RuleSpec::Describe() const {
  std::string out;
  auto add = [&](const std::string& s) { out += (out.empty() ? "" : " ") + s; };
  if (loopback) add("iifname \"lo\"");
  if (nonlocal_dest) add("fib daddr type != local");
  if (port) add("tcp dport " + std::to_string(port));
  if (ct_new) add("ct state new");
  const char* saddr = family == Family::kV6 ? "ip6 saddr" : "ip saddr";
  if (!saddr_set.empty() && shard_mask && family)
    add(std::string(saddr) + " & " + FormatAddr(*family, *shard_mask) + " == " + FormatAddr(*family, shard_value));
  if (!saddr_set.empty()) add(std::string(saddr) + " @" + saddr_set);
  if (!meter_set.empty() && limit)
    add("update @" + meter_set + " { " + saddr + " limit rate over " + std::to_string(limit->count) + "/" +
        (limit->unit_seconds == 1 ? "second" : limit->unit_seconds == 60 ? "minute"
                                             : limit->unit_seconds == 3600 ? "hour" : "day") +
        " burst " + std::to_string(limit->burst) + " packets }");
  else if (family && saddr_set.empty())
    add(family == Family::kV4 ? "meta nfproto ipv4" : "meta nfproto ipv6");
  add(VerdictName(verdict));
  return out;
}

uint32_t HostsCapacity(size_t count) {
  uint64_t cap = 1024;
  while (cap < 2 * static_cast<uint64_t>(count)) cap *= 2;
  return static_cast<uint32_t>(std::min<uint64_t>(cap, 1u << 30));
}

bool SetCompatible(const SetSpec& desired, const SetSpec& live, size_t count) {
  if (desired.kind != SetSpec::Kind::kAllowHosts || live.kind != desired.kind) return desired == live;
  return live.name == desired.name && live.family == desired.family && live.size >= count &&
         static_cast<uint64_t>(live.size) <= 4 * static_cast<uint64_t>(desired.size);
}

Ruleset BuildRuleset(const Policy& policy) {
  Ruleset rs;
  // Allow sets, for every allowlist a port uses (an unused allowlist costs nothing).
  std::vector<std::string> used;
  for (const auto& p : policy.ports)
    if (p.state == PortState::kClosed)
      for (const auto& a : p.allow)
        if (std::find(used.begin(), used.end(), a) == used.end()) used.push_back(a);
  std::sort(used.begin(), used.end());
  for (const auto& name : used) {
    const Allowlist& al = policy.allowlists.at(name);
    for (Family f : {Family::kV4, Family::kV6}) {
      AddrSet hosts, nets;
      SplitHostsAndNets(f, al.entries, &hosts.intervals, &nets.intervals);
      for (auto* s : {&hosts, &nets}) {
        if (s->intervals.empty()) continue;
        s->spec.kind = s == &hosts ? SetSpec::Kind::kAllowHosts : SetSpec::Kind::kAllowNets;
        s->spec.name = AllowSetName(name, s->spec.kind, f);
        s->spec.family = f;
        if (s == &hosts) s->spec.size = HostsCapacity(s->intervals.size());
        rs.sets.push_back(std::move(*s));
      }
    }
  }
  // Local webmail and local tools must keep working: loopback first.
  RuleSpec lo;
  lo.key = "mailward:loopback";
  lo.loopback = true;
  lo.verdict = Verdict::kAccept;
  rs.rules.push_back(lo);
  // The chain sits before DNAT on the prerouting hook: only connections to this host's own
  // addresses are judged (a container's outgoing IMAP to the world passes untouched).
  RuleSpec routed;
  routed.key = "mailward:not-local";
  routed.nonlocal_dest = true;
  routed.verdict = Verdict::kAccept;
  rs.rules.push_back(routed);

  for (const auto& p : policy.ports) {
    std::string base = "mailward:" + std::to_string(p.port);
    if (p.rate_limit) {
      for (Family f : {Family::kV4, Family::kV6}) {
        AddrSet m;
        m.spec.name = MeterSetName(p.port, f);
        m.spec.family = f;
        m.spec.kind = SetSpec::Kind::kMeter;
        m.spec.timeout_ms = std::max<uint64_t>(60, 2 * p.rate_limit->unit_seconds) * 1000;
        m.spec.size = 65535;
        rs.sets.push_back(m);
        RuleSpec r;
        r.key = base + ":ratelimit:" + FamilyName(f);
        r.port = p.port;
        r.ct_new = true;
        r.family = f;
        r.meter_set = m.spec.name;
        r.limit = p.rate_limit;
        r.verdict = p.action == Action::kReject ? Verdict::kReject : Verdict::kDrop;
        rs.rules.push_back(r);
      }
    }
    if (p.state == PortState::kOpen) {
      rs.open_ports.push_back(p.port);
      RuleSpec r;
      r.key = base + ":open";
      r.port = p.port;
      r.verdict = Verdict::kAccept;
      rs.rules.push_back(r);
      continue;
    }
    for (const auto& a : p.allow) {
      for (Family f : {Family::kV4, Family::kV6}) {
        for (auto kind : {SetSpec::Kind::kAllowHosts, SetSpec::Kind::kAllowNets}) {
          std::string set = AllowSetName(a, kind, f);
          if (!rs.FindSet(set)) continue;  // no entries of this shape: no set, no rule
          RuleSpec r;
          r.key = base + ":allow:" + a + (kind == SetSpec::Kind::kAllowHosts ? ":hosts:" : ":nets:") + FamilyName(f);
          r.port = p.port;
          r.family = f;
          r.saddr_set = set;
          r.verdict = Verdict::kAccept;
          rs.rules.push_back(r);
        }
      }
    }
    RuleSpec r;
    r.key = base + ":closed";
    r.port = p.port;
    r.ct_new = true;
    r.verdict = p.action == Action::kReject ? Verdict::kReject : Verdict::kDrop;
    rs.rules.push_back(r);
  }
  return rs;
}

namespace {
/// The address bits shard bits go to, in order: bit j of a shard index sits at byte
/// kShardBytes[j % n], bit j / n. IPv4: the last three octets; IPv6: the end of the interface
/// identifier and of the /64 prefix, so lists of ::1 hosts and of one /64 both spread.
constexpr uint8_t kShardBytesV4[] = {3, 2, 1};
constexpr uint8_t kShardBytesV6[] = {15, 7, 14, 6};

template <typename F>
void ForShardBits(Family f, unsigned bits, F&& fn) {
  const uint8_t* bytes = f == Family::kV4 ? kShardBytesV4 : kShardBytesV6;
  unsigned n = f == Family::kV4 ? 3 : 4;
  for (unsigned j = 0; j < bits; ++j) fn(j, bytes[j % n], static_cast<uint8_t>(1u << (j / n)));
}
}  // namespace

unsigned ShardBits(size_t count) {
  unsigned b = 0;
  while (b < kMaxShardBits && count > (kHostsPerShard << b)) ++b;
  return b;
}

Addr ShardMask(Family f, unsigned bits) {
  Addr m;
  ForShardBits(f, bits, [&](unsigned, uint8_t byte, uint8_t bit) { m.b[byte] |= bit; });
  return m;
}

Addr ShardValue(Family f, unsigned bits, uint32_t index) {
  Addr v;
  ForShardBits(f, bits, [&](unsigned j, uint8_t byte, uint8_t bit) {
    if (index & (1u << j)) v.b[byte] |= bit;
  });
  return v;
}

uint32_t ShardOf(Family f, unsigned bits, const Addr& a) {
  uint32_t index = 0;
  ForShardBits(f, bits, [&](unsigned j, uint8_t byte, uint8_t bit) {
    if (a.b[byte] & bit) index |= 1u << j;
  });
  return index;
}

std::string ShardSetName(const std::string& name, uint32_t index) {
  return name + "_s" + std::to_string(index);
}

std::string ShardBaseName(const std::string& name) {
  size_t at = name.rfind("_s");
  if (at == std::string::npos || at + 2 == name.size()) return name;
  for (size_t i = at + 2; i < name.size(); ++i)
    if (name[i] < '0' || name[i] > '9') return name;
  return name.substr(0, at);
}

Ruleset ShardHostSets(const Ruleset& rs) {
  Ruleset out;
  out.open_ports = rs.open_ports;
  struct Sharded {
    Family family;
    unsigned bits;
  };
  std::vector<std::pair<std::string, Sharded>> sharded;
  for (const auto& s : rs.sets) {
    unsigned bits = s.spec.kind == SetSpec::Kind::kAllowHosts ? ShardBits(s.intervals.size()) : 0;
    if (bits == 0) {
      out.sets.push_back(s);
      continue;
    }
    sharded.push_back({s.spec.name, {s.spec.family, bits}});
    size_t n = size_t{1} << bits, first = out.sets.size();
    for (uint32_t i = 0; i < n; ++i) {
      AddrSet shard;
      shard.spec = s.spec;
      shard.spec.name = ShardSetName(s.spec.name, i);
      out.sets.push_back(std::move(shard));
    }
    // Hosts are sorted, so each shard's subsequence stays sorted (canonical). Counted first, so
    // that each shard is one allocation of its size (100,000 addresses: 3 MB, not twice that).
    std::vector<uint32_t> of(s.intervals.size());
    std::vector<size_t> count(n, 0);
    for (size_t k = 0; k < s.intervals.size(); ++k) ++count[of[k] = ShardOf(s.spec.family, bits, s.intervals[k].start)];
    for (size_t i = 0; i < n; ++i) out.sets[first + i].intervals.reserve(count[i]);
    for (size_t k = 0; k < s.intervals.size(); ++k) out.sets[first + of[k]].intervals.push_back(s.intervals[k]);
    for (size_t i = first; i < out.sets.size(); ++i) out.sets[i].spec.size = HostsCapacity(out.sets[i].intervals.size());
  }
  for (const auto& r : rs.rules) {
    auto it = std::find_if(sharded.begin(), sharded.end(), [&](const auto& x) { return x.first == r.saddr_set; });
    if (r.saddr_set.empty() || it == sharded.end()) {
      out.rules.push_back(r);
      continue;
    }
    const Sharded& sh = it->second;
    for (uint32_t i = 0; i < (1u << sh.bits); ++i) {
      RuleSpec s = r;
      s.key = r.key + ":s" + std::to_string(i);
      s.saddr_set = ShardSetName(r.saddr_set, i);
      s.shard_mask = ShardMask(sh.family, sh.bits);
      s.shard_value = ShardValue(sh.family, sh.bits, i);
      out.rules.push_back(std::move(s));
    }
  }
  return out;
}

}  // namespace mw
