#include "cli/audit_cmd.h"

#include <sys/wait.h>
#include <unistd.h>

#include <iostream>

#include "policy/policy.h"
#include "report/report.h"
#include "util/text.h"
#include "util/fs.h"
#include "util/process.h"

namespace mw {
namespace templates {
extern const char kDovecotHardening23[];
extern const char kDovecotHardening24[];
}  // namespace templates

namespace {

using json = nlohmann::json;
constexpr const char* kDropInName = "99-mailward-hardening.conf";

bool HaveDoveconf() { return HaveProgram("doveconf"); }

}  // namespace

Result<dovecot::AuditResult> RunDovecotAudit(const std::string& config, const std::vector<std::string>& ignore) {
  auto files = dovecot::MakeDiskFileSource();
  auto cfg = dovecot::Parse(config, *files);
  if (!cfg.ok()) return cfg.status();
  auto stat = dovecot::MakeDiskFileStat();
  return dovecot::Audit(*cfg, *stat, ignore);
}

json AuditJson(const std::string& config, const dovecot::AuditResult& r) {
  json findings = json::array();
  for (const auto& f : r.findings) {
    findings.push_back({{"id", f.id},
                        {"setting", f.setting ? json(*f.setting) : json(nullptr)},
                        {"value", Truncate(f.value)},
                        {"severity", f.severity},
                        {"file", f.file},
                        {"line", f.line},
                        {"message", f.message},
                        {"fix", f.fix}});
  }
  json settings = json::object();
  for (const auto& [k, e] : r.effective)
    settings[k] = {{"value", Truncate(e.value)}, {"file", e.file.empty() ? json(nullptr) : json(e.file)}, {"line", e.line}};
  json counts = json::object();
  for (const char* s : {"critical", "high", "medium", "low", "info"}) counts[s] = 0;
  for (const auto& f : r.findings) counts[f.severity] = counts[f.severity].get<int>() + 1;
  return Utf8Safe({{"config", config}, {"version", r.version}, {"files", r.files}, {"findings", findings},
                   {"counts", counts}, {"ignored", r.ignored}, {"settings", settings}});
}

std::string AuditText(const dovecot::AuditResult& r, bool color) {
  std::string out;
  for (const auto& f : r.findings) {
    std::string sev = f.severity;
    for (auto& c : sev) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    const char* col = !color ? "" : SeverityRankColor(f.severity);
    std::string where = f.file + (f.line ? ":" + std::to_string(f.line) : "");
    out += "  " + std::string(col) + sev + (color ? "\033[0m" : "") + " " + f.id + "  " + where;
    if (f.setting) out += "  " + *f.setting + " = " + Excerpt(f.value, 200);
    out += "\n      " + f.message + "\n      fix: " + f.fix + "\n";
  }
  return out;
}

int CmdAuditDovecot(const GlobalOptions& g, const AuditOptions& o) {
  bool as_json = g.format == "json";
  std::string config = o.config;
  std::vector<std::string> ignore;
  // The policy supplies the config path and the ignore list when it is there.
  auto files = PolicyFiles(g.policy);
  if (files.ok()) {
    auto policy = LoadPolicy(*files);
    if (!policy.ok()) {
      return ReportError(g, "audit", policy.status());
    }
    if (config.empty() && policy->dovecot.enabled) config = policy->dovecot.config;
    ignore = policy->dovecot.ignore;
  }
  if (config.empty()) config = "/etc/dovecot/dovecot.conf";

  auto fail = [&](const std::string& msg) { return ReportError(g, "audit", Status::Io(msg)); };
  auto r = RunDovecotAudit(config, ignore);
  if (!r.ok()) return fail(r.status().message());

  json fix_report = nullptr;
  if (o.fix && !r->findings.empty()) {
    // Into the config's include folder, never into the admin's files.
    std::string confd = DirOf(config) + "/conf.d";
    bool included = false;
    for (const auto& f : r->files) included |= f.rfind(confd + "/", 0) == 0;
    auto main_text = ReadFile(config);
    if (main_text.ok() && main_text->find("!include conf.d/*.conf") != std::string::npos) included = true;
    if (!included || !IsDirectory(confd))
      return fail(config + " does not include conf.d/*.conf: add the line '!include conf.d/*.conf' at its end, or apply the fixes by hand");
    std::string dropin = confd + "/" + kDropInName;
    const char* text = r->version == "2.4" ? templates::kDovecotHardening24 : templates::kDovecotHardening23;
    Status ws = WriteFileAtomic(dropin, text, Durability::kFsync, 0644);
    if (!ws.ok()) return fail(ws.message());
    std::string checked = "doveconf not found: the drop-in was not checked";
    if (HaveDoveconf()) {
      auto run = RunProcess({"doveconf", "-c", config, "-n"});
      int rc = run.status;
      std::string out = run.err + run.out;
      if (rc != 0) {
        unlink(dropin.c_str());
        return fail("doveconf rejected the configuration with the drop-in, so it was removed again:\n" + out);
      }
      checked = "doveconf -n accepts the configuration";
    }
    auto before = r->findings.size();
    r = RunDovecotAudit(config, ignore);
    if (!r.ok()) return fail(r.status().message());
    fix_report = {{"dropin", dropin},
                  {"checked", checked},
                  {"fixed", before - r->findings.size()},
                  {"reload", "systemctl reload dovecot (or: doveadm reload)"}};
  }

  if (as_json) {
    json j = AuditJson(config, *r);
    j["command"] = "audit";
    j["fix"] = fix_report;
    std::cout << DumpJson(j) << "\n";
  } else if (!g.quiet) {
    std::cout << "dovecot " << r->version << " configuration " << config << " (" << r->files.size()
              << (r->files.size() == 1 ? " file)\n" : " files)\n");
    if (!fix_report.is_null())
      std::cout << "wrote " << fix_report["dropin"].get<std::string>() << " (" << fix_report["checked"].get<std::string>()
                << "); fixed " << fix_report["fixed"].get<size_t>() << "; reload with: "
                << fix_report["reload"].get<std::string>() << "\n";
    std::cout << AuditText(*r, UseColor());
    std::cout << (r->findings.empty() ? "clean" : std::to_string(r->findings.size()) + " findings");
    if (!r->ignored.empty()) std::cout << " (" << r->ignored.size() << " ignored by the policy)";
    std::cout << "\n";
  }
  return r->findings.empty() ? exit_code::kOk : exit_code::kChanges;
}

}  // namespace mw
