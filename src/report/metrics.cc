#include "report/metrics.h"

#include <cstdio>

#include "util/fs.h"

namespace mw {

std::string MetricsText(const CheckMetrics& m) {
  std::string out;
  char buf[256];
  auto metric = [&](const char* name, const char* type, const char* help) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  };
  metric("mailward_up", "gauge", "1 if the last check ran without an error");
  out += std::string("mailward_up ") + (m.up ? "1" : "0") + "\n";
  metric("mailward_in_sync", "gauge", "1 if the live firewall matches the policy");
  out += std::string("mailward_in_sync ") + (m.in_sync ? "1" : "0") + "\n";
  metric("mailward_drift_changes", "gauge", "changes apply would make");
  out += "mailward_drift_changes " + std::to_string(m.changes) + "\n";
  metric("mailward_conflicts", "gauge", "rules elsewhere that would still block a port the policy keeps open");
  out += "mailward_conflicts " + std::to_string(m.conflicts) + "\n";
  metric("mailward_dovecot_findings", "gauge", "Dovecot audit findings by severity");
  for (const char* s : {"critical", "high", "medium", "low", "info"}) {
    auto it = m.findings.find(s);
    out += std::string("mailward_dovecot_findings{severity=\"") + s + "\"} " +
           std::to_string(it == m.findings.end() ? 0 : it->second) + "\n";
  }
  metric("mailward_probe_open", "gauge", "1 if the probed port answered");
  for (const auto& p : m.probes) {
    std::snprintf(buf, sizeof buf, "mailward_probe_open{host=\"%s\",port=\"%u\"} %d\n", p.host.c_str(), p.port,
                  p.state == "open" ? 1 : 0);
    out += buf;
  }
  metric("mailward_probe_as_policy", "gauge", "1 as the policy says, 0 not, -1 cannot tell from this host");
  for (const auto& p : m.probes) {
    std::snprintf(buf, sizeof buf, "mailward_probe_as_policy{host=\"%s\",port=\"%u\"} %d\n", p.host.c_str(), p.port,
                  p.as_policy);
    out += buf;
  }
  metric("mailward_last_run_timestamp_seconds", "gauge", "when the last check ran");
  std::snprintf(buf, sizeof buf, "mailward_last_run_timestamp_seconds %.3f\n", m.timestamp);
  out += buf;
  metric("mailward_last_run_duration_seconds", "gauge", "how long the last check took");
  std::snprintf(buf, sizeof buf, "mailward_last_run_duration_seconds %.6f\n", m.duration);
  out += buf;
  return out;
}

Status WriteMetrics(const std::string& path, const CheckMetrics& m) {
  return WriteFileAtomic(path, MetricsText(m), Durability::kNoFsync, 0644);
}

}  // namespace mw
