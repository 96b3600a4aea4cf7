// Prometheus textfile-collector output (node_exporter's convention) for `check`.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "util/status.h"

namespace mw {

struct CheckMetrics {
  bool up = false;                 ///< the check ran to the end without an error
  bool in_sync = false;
  size_t changes = 0;
  size_t conflicts = 0;
  std::map<std::string, size_t> findings;  ///< by severity
  struct Probe {
    std::string host;
    unsigned port = 0;
    std::string state;
    int as_policy = -1;            ///< 1, 0, or -1 for "cannot tell"
  };
  std::vector<Probe> probes;
  double timestamp = 0;            ///< unix seconds
  double duration = 0;             ///< seconds
};

/// The exposition text.
std::string MetricsText(const CheckMetrics& m);
/// Writes it atomically (temporary file + rename, mode 0644).
Status WriteMetrics(const std::string& path, const CheckMetrics& m);

}  // namespace mw
