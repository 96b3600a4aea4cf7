#include "report/metrics.h"

#include <cstdio>
#include <ctime>

#include "util/fs.h"

namespace mw {
namespace {

std::string Num(double v, const char* fmt = "%.3f") {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

/// A label value with Prometheus' escapes (backslash, quote, newline).
std::string Label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

std::string MetricsText(const CheckMetrics& m) {
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  };
  metric("mailward_up", "gauge", "1 if the last check ran without an error; on 0 only what it learned is exported");
  out += std::string("mailward_up ") + (m.up ? "1" : "0") + "\n";
  if (m.backend) {
    metric("mailward_backend_info", "gauge", "the firewall backend mailward uses (label backend)");
    out += "mailward_backend_info{backend=\"" + Label(*m.backend) + "\"} 1\n";
  }
  if (!m.managers.empty()) {
    metric("mailward_firewall_manager_active", "gauge", "1 if that firewall manager is active on the host");
    for (const auto& [name, active] : m.managers)
      out += "mailward_firewall_manager_active{manager=\"" + Label(name) + "\"} " + (active ? "1" : "0") + "\n";
  }
  if (m.in_sync) {
    metric("mailward_in_sync", "gauge", "1 if the live firewall matches the policy");
    out += std::string("mailward_in_sync ") + (*m.in_sync ? "1" : "0") + "\n";
  }
  if (m.changes) {
    metric("mailward_drift_changes", "gauge", "changes apply would make");
    out += "mailward_drift_changes " + std::to_string(*m.changes) + "\n";
  }
  if (m.conflicts) {
    metric("mailward_conflicts", "gauge", "packet paths where the firewall does not do what the policy says");
    out += "mailward_conflicts " + std::to_string(*m.conflicts) + "\n";
  }
  if (m.findings) {
    metric("mailward_dovecot_findings", "gauge", "Dovecot audit findings by severity");
    for (const char* s : {"critical", "high", "medium", "low", "info"}) {
      auto it = m.findings->find(s);
      out += std::string("mailward_dovecot_findings{severity=\"") + s + "\"} " +
             std::to_string(it == m.findings->end() ? 0 : it->second) + "\n";
    }
  }
  if (m.probes && !m.probes->empty()) {
    auto labels = [](const CheckMetrics::Probe& p) {
      return "{host=\"" + Label(p.host) + "\",port=\"" + std::to_string(p.port) + "\"}";
    };
    metric("mailward_probe_open", "gauge", "1 if the probed port answered");
    for (const auto& p : *m.probes) out += "mailward_probe_open" + labels(p) + (p.state == "open" ? " 1\n" : " 0\n");
    metric("mailward_probe_as_policy", "gauge", "1 as the policy says, 0 not, -1 cannot tell from this host");
    for (const auto& p : *m.probes) out += "mailward_probe_as_policy" + labels(p) + " " + std::to_string(p.as_policy) + "\n";
    bool tls = false;
    for (const auto& p : *m.probes) tls |= p.cert_not_after.has_value();
    if (tls) {
      metric("mailward_tls_cert_not_after_timestamp_seconds", "gauge",
             "when the certificate served on the port expires (unix seconds)");
      for (const auto& p : *m.probes)
        if (p.cert_not_after)
          out += "mailward_tls_cert_not_after_timestamp_seconds" + labels(p) + " " + Num(*p.cert_not_after, "%.0f") + "\n";
      metric("mailward_tls_cert_expiry_seconds", "gauge",
             "seconds the certificate served on the port had left when probed (negative: expired)");
      for (const auto& p : *m.probes)
        if (p.cert_not_after)
          out += "mailward_tls_cert_expiry_seconds" + labels(p) + " " + Num(*p.cert_not_after - m.timestamp, "%.0f") + "\n";
    }
  }
  if (m.last_apply) {
    metric("mailward_last_apply_success_timestamp_seconds", "gauge", "when an apply last succeeded (unix seconds)");
    out += "mailward_last_apply_success_timestamp_seconds " + Num(*m.last_apply) + "\n";
  }
  metric("mailward_last_run_timestamp_seconds", "gauge", "when the last check ran");
  out += "mailward_last_run_timestamp_seconds " + Num(m.timestamp) + "\n";
  metric("mailward_last_run_duration_seconds", "gauge", "how long the last check took");
  out += "mailward_last_run_duration_seconds " + Num(m.duration, "%.6f") + "\n";
  return out;
}

Status WriteMetrics(const std::string& path, const CheckMetrics& m) {
  std::string dir = DirOf(path);
  if (!IsDirectory(dir))
    return Status::Io(dir + ": the metrics directory does not exist: create it (node_exporter's "
                            "--collector.textfile.directory) or fix --metrics-file");
  return WriteFileAtomic(path, MetricsText(m), Durability::kNoFsync, 0644);
}

std::optional<double> ParseUtcTimestamp(const std::string& text) {
  std::tm tm{};
  int y, mo, d, h, mi, s;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2dZ", &y, &mo, &d, &h, &mi, &s) != 6) return std::nullopt;
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  return static_cast<double>(timegm(&tm));
}

Status RecordLastApply(const std::string& state_dir) {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return WriteFileAtomic(state_dir + "/last-apply", Num(ts.tv_sec + ts.tv_nsec / 1e9) + "\n", Durability::kNoFsync, 0600);
}

std::optional<double> ReadLastApply(const std::string& state_dir) {
  auto t = ReadFile(state_dir + "/last-apply", Follow::kNoSymlinks);  // state-dir file: never a link
  if (!t.ok()) return std::nullopt;
  char* end = nullptr;
  double v = std::strtod(t->c_str(), &end);
  if (end == t->c_str() || v <= 0) return std::nullopt;
  return v;
}

}  // namespace mw
