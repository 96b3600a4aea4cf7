#include "cli/probe_cmd.h"

#include <iostream>

#include "report/report.h"
#include "util/text.h"

namespace mw {
namespace {
using json = nlohmann::json;

/// What is wrong with the TLS a port spoke, judged against the policy's `tls` (an expired
/// certificate is wrong even without one), or nullopt.
std::optional<std::string> TlsProblem(const TlsPolicy& t, const probe::Result& r) {
  if (!r.tls) return std::nullopt;
  const auto& tls = *r.tls;
  int min_days = t.min_days_left.value_or(0);
  if (!tls.not_after.empty() && tls.days_left < min_days) {
    if (tls.days_left < 0)
      return "the certificate expired " + std::to_string(-tls.days_left) + " day(s) ago (" + tls.not_after + ")";
    return "the certificate expires in " + std::to_string(tls.days_left) + " day(s) (" + tls.not_after +
           "), fewer than the policy's min_days_left: " + std::to_string(min_days);
  }
  if (t.min_version && TlsVersionRank(tls.version) < TlsVersionRank(*t.min_version))
    return "TLS " + tls.version + " was negotiated, older than the policy's min_version: " + *t.min_version;
  return std::nullopt;
}

}  // namespace

std::vector<JudgedProbe> JudgeProbes(const Policy& policy, const std::vector<probe::Result>& results,
                                     const std::string& source) {
  std::vector<JudgedProbe> out;
  for (const auto& r : results) {
    JudgedProbe j;
    j.result = r;
    const PortPolicy* pp = nullptr;
    for (const auto& p : policy.ports)
      if (p.port == r.port) pp = &p;
    bool local = probe::IsLocal(r.host);
    bool allowlisted = pp && pp->state == PortState::kClosed && InAllowlists(policy, *pp, source);
    j.expected = !pp || pp->state == PortState::kOpen || allowlisted ? "open" : "closed";
    if (j.expected == "closed") {
      if (local) {
        j.reason = "a probe from this host crosses loopback, which the policy exempts: it cannot show whether "
                   "the port is closed to the network; probe from another host (mailward probe HOST)";
      } else if (r.state == "open") {
        j.as_policy = false;
        j.reason = "the port should be closed to this source but answers";
      } else {
        j.as_policy = true;
        j.reason = "closed to this source, as the policy says";
      }
    } else if (r.state != "open") {
      j.as_policy = false;
      j.reason = r.state == "closed" ? "the port should be open but the connection is refused (is the service running?)"
                                     : "the port should be open but nothing answers (filtered)";
    } else if (r.proto != probe::Proto::kTcp && r.greeting.empty()) {
      j.as_policy = false;
      j.reason = "the port is open but no " + std::string(probe::ProtoName(r.proto)) + " service answered: " + r.error;
    } else if (!r.error.empty()) {
      j.as_policy = false;
      j.reason = "the service answered, then: " + r.error;
    } else if (r.cleartext_login && !r.tls && !local) {
      j.as_policy = false;
      j.reason = "a password can be sent in cleartext and no TLS upgrade is possible" +
                 (r.cleartext_evidence.empty() ? "" : " (" + r.cleartext_evidence + ")");
    } else if (r.cleartext_login && !local) {
      j.as_policy = false;
      j.reason = "a password can be sent before TLS" + (r.cleartext_evidence.empty() ? "" : " (" + r.cleartext_evidence + ")");
    } else if (auto bad = TlsProblem(policy.TlsFor(pp), r)) {
      j.as_policy = false;
      j.reason = *bad;
    } else {
      j.as_policy = true;
      j.reason = allowlisted ? "open to this allowlisted source, as the policy says" : "open, as the policy says";
      if (local && r.proto != probe::Proto::kTcp && r.tls == std::nullopt && (r.proto == probe::Proto::kImap || r.proto == probe::Proto::kPop3))
        j.reason += " (a local probe counts as secured for Dovecot: cleartext login checks need a remote probe)";
    }
    out.push_back(std::move(j));
  }
  return out;
}

json ProbeJson(const JudgedProbe& p) {
  const auto& r = p.result;
  json tls = nullptr;
  if (r.tls)
    tls = {{"version", r.tls->version}, {"cipher", r.tls->cipher}, {"subject", r.tls->subject},
           {"not_after", r.tls->not_after}, {"days_left", r.tls->days_left}};
  return Utf8Safe({{"port", r.port},
          {"host", r.host},
          {"state", r.state},
          {"protocol", probe::ProtoName(r.proto)},
          {"expected", p.expected},
          {"as_policy", p.as_policy ? json(*p.as_policy) : json(nullptr)},
          {"reason", p.reason},
          {"connect_ms", r.connect_ms},
          {"greeting", r.greeting},
          {"capabilities", r.capabilities},
          {"starttls", r.starttls},
          {"login_disabled", r.login_disabled},
          {"auth_cleartext", r.auth_cleartext},
          {"cleartext_login", r.cleartext_login},
          {"cleartext_evidence", r.cleartext_evidence.empty() ? json(nullptr) : json(r.cleartext_evidence)},
          {"tls", tls},
          {"error", r.error.empty() ? json(nullptr) : json(r.error)}});
}

std::string ProbeText(const std::vector<JudgedProbe>& probes, bool color) {
  std::string out;
  for (const auto& p : probes) {
    const auto& r = p.result;
    const char* mark = !p.as_policy ? "?" : *p.as_policy ? "ok" : "NO";
    const char* col = !color ? "" : !p.as_policy ? "\033[33m" : *p.as_policy ? "\033[32m" : "\033[31m";
    char head[160];
    std::snprintf(head, sizeof head, "  %s%-2s%s %5u %-22s %-8s (expect %s)", col, mark, color ? "\033[0m" : "", r.port,
                  r.host.c_str(), r.state.c_str(), p.expected.c_str());
    out += head;
    std::string d;
    if (r.state == "open" && r.proto != probe::Proto::kTcp) {
      d += std::string(probe::ProtoName(r.proto));
      if (r.starttls) d += ", STARTTLS";
      if (r.login_disabled) d += ", LOGINDISABLED";
      if (!r.auth_cleartext.empty()) {
        d += ", AUTH";
        for (const auto& a : r.auth_cleartext) d += " " + a;
      }
      if (r.tls) d += ", " + r.tls->version + " " + r.tls->cipher + ", cert " + r.tls->subject + " expires " +
                      r.tls->not_after + " (" + std::to_string(r.tls->days_left) + " days)";
    }
    // What a server sent (mechanisms, certificate subject) is escaped: no terminal escapes.
    if (!d.empty()) out += "  " + Excerpt(d, 400);
    out += "\n      " + Excerpt(p.reason, 400) + "\n";
  }
  return out;
}

int CmdProbe(const GlobalOptions& g, const ProbeOptions& o) {
  auto files = PolicyFiles(g.policy);
  auto policy = files.ok() ? LoadPolicy(*files) : Result<Policy>(files.status());
  if (!policy.ok()) {
    return ReportError(g, "probe", policy.status());
  }
  std::vector<std::string> hosts = o.hosts.empty() ? probe::LocalAddresses() : o.hosts;
  std::vector<std::pair<std::string, uint16_t>> targets;
  for (const auto& h : hosts)
    for (const auto& p : policy->ports) targets.push_back({h, p.port});
  probe::Options popt{o.timeout_s, o.deadline_s, o.source};
  auto judged = JudgeProbes(*policy, probe::ProbeAll(targets, popt), o.source);
  bool ok = true;
  for (const auto& j : judged) ok &= j.as_policy.value_or(true);
  if (g.format == "json") {
    json results = json::array();
    for (const auto& j : judged) results.push_back(ProbeJson(j));
    std::cout << DumpJson(json{{"command", "probe"}, {"as_policy", ok},
                                {"source", o.source.empty() ? json(nullptr) : json(o.source)}, {"results", results}})
              << "\n";
  } else if (!g.quiet) {
    std::cout << ProbeText(judged, UseColor());
    std::cout << (ok ? "as the policy says\n" : "NOT as the policy says\n");
  }
  return ok ? exit_code::kOk : exit_code::kChanges;
}

}  // namespace mw
