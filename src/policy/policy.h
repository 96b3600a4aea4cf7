// The policy: value types and the strict YAML loader (SPEC.md, "Policy file").
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "policy/address.h"
#include "util/status.h"

namespace mw {

/// Where a value came from, for messages: "file:line:column" (1-based).
struct SourcePos {
  std::string file;
  int line = 0;
  int column = 0;
  std::string ToString() const;
};

enum class BackendKind { kAuto, kNftables, kIptables, kUfw };
const char* BackendName(BackendKind k);

enum class PortState { kOpen, kClosed };
enum class Action { kDrop, kReject };

/// New connections per source address: `count` per `unit_seconds`, with a burst.
struct RateLimit {
  uint32_t count = 0;
  uint64_t unit_seconds = 60;
  uint32_t burst = 5;
  std::string text;  ///< as written, e.g. "20/minute"
};

struct Allowlist {
  std::string name;
  std::vector<Cidr> entries;  ///< in file order; duplicates allowed, merged later
  std::vector<std::string> files;  ///< the `file:` sources it read
  SourcePos where;
};

/// What the probes require of a port's TLS: `tls: {min_days_left: 14, min_version: TLSv1.2}`
/// globally or per port (a port's fields override the global ones).
struct TlsPolicy {
  std::optional<int> min_days_left;   ///< the certificate must have at least this many days left
  std::optional<std::string> min_version;  ///< "TLSv1.2": the negotiated version must not be older
  SourcePos where;
};

/// A TLS version's rank (SSLv3 0, TLSv1 1, TLSv1.1 2, TLSv1.2 3, TLSv1.3 4), -1 if unknown.
int TlsVersionRank(const std::string& version);

struct PortPolicy {
  std::string name;  ///< the key: a service name or the admin's label
  uint16_t port = 0;
  PortState state = PortState::kClosed;
  Action action = Action::kDrop;
  std::vector<std::string> allow;
  std::optional<RateLimit> rate_limit;
  std::optional<TlsPolicy> tls;
  SourcePos where;
};

struct DovecotPolicy {
  bool enabled = false;
  std::string config = "/etc/dovecot/dovecot.conf";
  std::vector<std::string> ignore;
};

struct Policy {
  BackendKind backend = BackendKind::kAuto;
  std::map<std::string, Allowlist> allowlists;
  std::vector<PortPolicy> ports;  ///< sorted by port number
  DovecotPolicy dovecot;
  std::optional<TlsPolicy> tls;    ///< the global TLS requirements of the probes
  std::vector<std::string> files;  ///< the policy files read, in merge order
  /// The TLS requirements for a port: its own fields, else the global ones.
  TlsPolicy TlsFor(const PortPolicy* port) const;
};

/// Whether `address` is in one of `port`'s allow lists (false for an unparsable address).
bool InAllowlists(const Policy& policy, const PortPolicy& port, const std::string& address);

/// The port a known service name gives, or 0.
uint16_t KnownServicePort(const std::string& name);

/// The files a --policy path stands for: a file is itself, except that the default
/// /etc/mailward/policy.yaml (or any file named policy.yaml) also pulls in the sibling
/// policy.d/*.yaml; a directory is DIR/policy.yaml plus DIR/policy.d/*.yaml, or, without a
/// policy.yaml, every DIR/*.yaml. Names sorted; missing path is an error.
Result<std::vector<std::string>> PolicyFiles(const std::string& path);

/// Loads and validates the files in order, merging them. Every problem is reported (one per
/// line, "file:line:column: message"); on any problem returns Code::kInvalidPolicy.
Result<Policy> LoadPolicy(const std::vector<std::string>& files);

/// Text-only entry point for tests: one document named `name`. Allowlist `file:` paths are
/// read from disk relative to the working directory.
Result<Policy> ParsePolicyText(const std::string& text, const std::string& name = "<test>");

}  // namespace mw
