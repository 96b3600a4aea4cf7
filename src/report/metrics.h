// Prometheus textfile-collector output (node_exporter's convention) for `check`.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "util/status.h"

namespace mw {

/// What one `check` learned. Everything it did not get to stays unset and is left out of the
/// file: a failed check (mailward_up 0) never reports "0 conflicts" it did not count.
struct CheckMetrics {
  bool up = false;                        ///< the check ran to the end without an error
  std::optional<std::string> backend;     ///< "nftables" | "iptables" | "ufw", once chosen
  std::map<std::string, bool> managers;   ///< firewall manager ("ufw", "firewalld") -> active
  std::optional<bool> in_sync;
  std::optional<size_t> changes;
  std::optional<size_t> conflicts;
  /// Dovecot findings by severity; unset when the audit did not run (no dovecot block, error).
  std::optional<std::map<std::string, size_t>> findings;
  struct Probe {
    std::string host;
    unsigned port = 0;
    std::string state;
    int as_policy = -1;                   ///< 1, 0, or -1 for "cannot tell"
    std::optional<double> cert_not_after; ///< unix seconds, when TLS was reached
  };
  std::optional<std::vector<Probe>> probes;  ///< unset: not probed (--no-probe, or an error first)
  std::optional<double> last_apply;       ///< unix seconds of the last successful apply
  double timestamp = 0;                   ///< unix seconds
  double duration = 0;                    ///< seconds
};

/// The exposition text.
std::string MetricsText(const CheckMetrics& m);
/// Writes it atomically (temporary file + rename) with mode 0644 whatever the umask, so that
/// node_exporter (another user) can read it. A missing directory is an error.
Status WriteMetrics(const std::string& path, const CheckMetrics& m);

/// "2026-11-26T14:05:00Z" (probe::TlsInfo::not_after) -> unix seconds.
std::optional<double> ParseUtcTimestamp(const std::string& text);

/// The state directory's record of the last successful apply (`last-apply`, unix seconds).
Status RecordLastApply(const std::string& state_dir);
std::optional<double> ReadLastApply(const std::string& state_dir);

}  // namespace mw
