#include "cli/audit_cmd.h"

#include <sys/wait.h>
#include <unistd.h>

#include <iostream>
#include <set>

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

/// doveconf's error output, as mailward may repeat it: doveconf quotes configuration text
/// ("Unknown setting: ..."), so a line about a file others cannot read keeps only its position,
/// and every other line is a short escaped excerpt.
std::string DoveconfMessage(const std::string& all) {
  static const std::string kMarker = "Error in configuration file ";
  std::string out;
  for (size_t pos = 0; pos < all.size();) {
    size_t eol = all.find('\n', pos);
    std::string line = all.substr(pos, eol == std::string::npos ? std::string::npos : eol - pos);
    pos = eol == std::string::npos ? all.size() : eol + 1;
    if (line.empty()) continue;
    std::string shown = Excerpt(line, 300);
    if (auto m = line.find(kMarker); m != std::string::npos) {
      size_t start = m + kMarker.size();
      size_t end = line.find(" line ", start);
      if (end == std::string::npos) end = line.find(": ", start);
      std::string file = line.substr(start, end == std::string::npos ? std::string::npos : end - start);
      if (!WorldReadable(file)) {
        size_t colon = end == std::string::npos ? std::string::npos : line.find(": ", end);
        shown = Excerpt(line.substr(0, colon), 300) + ": (content not shown: " + Excerpt(file, 300) +
                " is not readable by others)";
      }
    }
    out += (out.empty() ? "" : "\n") + shown;
  }
  return out;
}

/// The config path reads as doveconf's normalized output; every other file from disk.
class NormalizedSource : public dovecot::FileSource {
 public:
  NormalizedSource(std::string path, std::string text)
      : path_(std::move(path)), text_(std::move(text)), disk_(dovecot::MakeDiskFileSource()) {}
  Result<std::string> Read(const std::string& path) override { return path == path_ ? text_ : disk_->Read(path); }
  std::vector<std::string> Glob(const std::string& pattern) override { return disk_->Glob(pattern); }
  bool Private(const std::string& path) override { return disk_->Private(path); }
  std::optional<std::string> Resolve(const std::string& host) override { return disk_->Resolve(host); }
  std::string Canonical(const std::string& path) override { return path == path_ ? path : disk_->Canonical(path); }

 private:
  std::string path_, text_;
  std::unique_ptr<dovecot::FileSource> disk_;
};

/// `doveconf -c CONFIG -f protocol=X -f remote=Y KEY...` as the source of the values: one run per
/// context for the judged keys, `-h KEY` for any other key.
class DoveconfOracle : public dovecot::ValueOracle {
 public:
  DoveconfOracle(std::string config, bool is_24) : config_(std::move(config)), is_24_(is_24) {}

  std::optional<std::string> Get(const std::string& key, const dovecot::Context& ctx) override {
    std::string ct = ctx.Text();
    if (!ran_.count(ct)) Prefetch(dovecot::JudgedKeys(is_24_), ctx);
    auto& values = cache_[ct];
    if (auto it = values.find(key); it != values.end()) return it->second;
    auto argv = Argv(ctx);
    argv.push_back("-h");
    argv.push_back(key);
    auto run = RunProcess(argv);
    if (!run.ok()) return std::nullopt;  // a key doveconf does not know: keep the parser's
    std::string v = run.out;
    if (!v.empty() && v.back() == '\n') v.pop_back();
    values[key] = v;
    return v;
  }

  /// `doveconf [-f ...] KEY...` prints `KEY = VALUE` lines, the values -h prints one by one.
  void Prefetch(const std::vector<std::string>& keys, const dovecot::Context& ctx) override {
    std::string ct = ctx.Text();
    ran_.insert(ct);
    auto& values = cache_[ct];
    auto argv = Argv(ctx);
    for (const auto& k : keys) argv.push_back(k);
    auto run = RunProcess(argv);
    if (!run.ok()) {
      // The first Fatal/Error line (doveconf repeats a conflict once per module, and warnings
      // such as "Ambiguous '#'" come first).
      std::string all = DoveconfMessage(run.Message()), msg;
      for (size_t pos = 0; pos < all.size() && msg.empty();) {
        size_t eol = all.find('\n', pos);
        std::string line = all.substr(pos, eol == std::string::npos ? std::string::npos : eol - pos);
        if (line.find("Fatal:") != std::string::npos || line.find("Error:") != std::string::npos) msg = line;
        pos = eol == std::string::npos ? all.size() : eol + 1;
      }
      if (msg.empty()) msg = all;
      if (error_.empty()) error_ = "doveconf" + (ct.empty() ? "" : " (" + ct + ")") + ": " + msg;
      return;
    }
    size_t pos = 0;
    while (pos < run.out.size()) {
      size_t eol = run.out.find('\n', pos);
      if (eol == std::string::npos) eol = run.out.size();
      std::string line = run.out.substr(pos, eol - pos);
      pos = eol + 1;
      auto eq = line.find(" = ");
      if (eq != std::string::npos) values[line.substr(0, eq)] = line.substr(eq + 3);
      else if (line.size() > 2 && line.compare(line.size() - 2, 2, " =") == 0) values[line.substr(0, line.size() - 2)] = "";
    }
  }
  const std::string& error() const { return error_; }

 private:
  std::vector<std::string> Argv(const dovecot::Context& ctx) const {
    std::vector<std::string> argv = {"doveconf", "-c", config_};
    if (!ctx.protocol.empty()) argv.insert(argv.end(), {"-f", "protocol=" + ctx.protocol});
    if (ctx.remote) argv.insert(argv.end(), {"-f", "remote=" + ctx.remote->text});
    if (ctx.local) argv.insert(argv.end(), {"-f", "local=" + ctx.local->text});
    if (!ctx.local_name.empty()) argv.insert(argv.end(), {"-f", "lname=" + ctx.local_name});  // doveconf's name
    return argv;
  }
  std::string config_;
  bool is_24_;
  std::map<std::string, std::map<std::string, std::string>> cache_;
  std::set<std::string> ran_;
  std::string error_;
};

}  // namespace

Result<dovecot::AuditResult> RunDovecotAudit(const std::string& config, const std::vector<std::string>& ignore,
                                             const std::string& engine) {
  bool use_doveconf = engine == "doveconf" || (engine == "auto" && HaveDoveconf());
  if (engine == "doveconf" && !HaveDoveconf())
    return Status::Invalid("--engine doveconf: doveconf is not installed (use --engine builtin)");
  auto files = dovecot::MakeDiskFileSource();
  auto cfg = dovecot::Parse(config, *files);
  std::string fallback;
  if (!cfg.ok()) {
    if (!use_doveconf) return cfg.status();
    // doveconf is the judge: if it reads the config, judge its normalized form (`doveconf -n -P`,
    // same settings, same filter blocks) and say that file:line is lost.
    auto n = RunProcess({"doveconf", "-c", config, "-n", "-P"});
    if (!n.ok()) return Status::Invalid(cfg.status().message() + "; doveconf says: " + DoveconfMessage(n.Message()));
    std::string parse_error = cfg.status().message();
    NormalizedSource normalized(config, n.out);
    auto again = dovecot::Parse(config, normalized);
    if (!again.ok())
      return Status::Invalid(parse_error +
                             " (doveconf accepts this configuration: please report it as a mailward parser bug)");
    cfg = std::move(again);
    fallback = "mailward's parser refused this configuration (" + parse_error +
               ") but doveconf reads it: judged on `doveconf -n` output, so file:line points there and "
               "included files were not checked";
  }
  auto stat = dovecot::MakeDiskFileStat();
  if (use_doveconf && engine == "auto") {
    // A 2.4 config (a repository, a container's volume) on a host whose doveconf is 2.3, or the
    // other way round: that doveconf cannot read it, the builtin parser can.
    auto ver = RunProcess({"dovecot", "--version"});  // "2.3.19.1 (9b53102964)"
    bool known = ver.ok() && ver.out.rfind("2.", 0) == 0;
    bool doveconf_24 = known && ver.out.rfind("2.3", 0) != 0 && ver.out.rfind("2.2", 0) != 0;
    if (known && doveconf_24 != cfg->is_24) {
      use_doveconf = false;
      fallback = std::string("the installed doveconf reads Dovecot ") + (doveconf_24 ? "2.4" : "2.3") +
                 " configurations and this one is " + (cfg->is_24 ? "2.4" : "2.3") + ": judged by the builtin parser";
    }
  }
  if (!use_doveconf) {
    auto r = dovecot::Audit(*cfg, *stat, ignore, nullptr, files.get());
    if (!fallback.empty()) r.warnings.push_back(fallback);
    return r;
  }
  DoveconfOracle oracle(config, cfg->is_24);
  oracle.Prefetch(dovecot::JudgedKeys(cfg->is_24), {});
  if (!oracle.error().empty()) return Status::Invalid(config + ": " + oracle.error());
  auto r = dovecot::Audit(*cfg, *stat, ignore, &oracle, files.get());
  if (!fallback.empty()) r.warnings.push_back(fallback);
  if (!oracle.error().empty()) r.warnings.push_back(oracle.error());
  return r;
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
                        {"fix", f.fix},
                        {"contexts", f.contexts}});
  }
  auto values = [](const std::map<std::string, dovecot::Effective>& m) {
    json out = json::object();
    for (const auto& [k, e] : m)
      out[k] = {{"value", Truncate(e.value)}, {"file", e.file.empty() ? json(nullptr) : json(e.file)}, {"line", e.line}};
    return out;
  };
  json settings = values(r.effective);
  json contexts = json::array();
  for (const auto& c : r.contexts) {
    json filter = json::object();
    if (!c.context.protocol.empty()) filter["protocol"] = c.context.protocol;
    if (c.context.remote) filter["remote"] = c.context.remote->text;
    if (c.context.local) filter["local"] = c.context.local->text;
    if (!c.context.local_name.empty()) filter["lname"] = c.context.local_name;  // doveconf's -f name
    json args = json::array();
    for (const auto& [k, v] : filter.items())
      args.push_back("-f"), args.push_back(k + "=" + v.get<std::string>());
    contexts.push_back({{"context", c.context.Text()}, {"filter", filter}, {"doveconf_args", args},
                        {"settings", values(c.settings)}});
  }
  json counts = json::object();
  for (const char* s : {"critical", "high", "medium", "low", "info"}) counts[s] = 0;
  for (const auto& f : r.findings) counts[f.severity] = counts[f.severity].get<int>() + 1;
  return Utf8Safe({{"config", config}, {"version", r.version}, {"files", r.files}, {"findings", findings},
                   {"counts", counts}, {"ignored", r.ignored}, {"settings", settings}, {"contexts", contexts},
                   {"engine", r.engine}, {"warnings", r.warnings}});
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
    bool global_only = f.contexts.size() == 1 && f.contexts[0].empty();
    if (!f.contexts.empty() && !global_only) {
      std::string list;
      for (const auto& c : f.contexts) list += (list.empty() ? "" : ", ") + (c.empty() ? std::string("global") : c);
      out += "      in: " + list + "\n";
    }
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
  auto r = RunDovecotAudit(config, ignore, o.engine);
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
      if (rc != 0) {
        std::string out = DoveconfMessage(run.Message());
        unlink(dropin.c_str());
        return fail("doveconf rejected the configuration with the drop-in, so it was removed again:\n" + out);
      }
      checked = "doveconf -n accepts the configuration";
    }
    auto before = r->findings.size();
    r = RunDovecotAudit(config, ignore, o.engine);
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
              << (r->files.size() == 1 ? " file" : " files") << ", judged by " << r->engine << ")\n";
    for (const auto& w : r->warnings) std::cout << "  warning: " << w << "\n";
    if (!fix_report.is_null())
      std::cout << "wrote " << fix_report["dropin"].get<std::string>() << " (" << fix_report["checked"].get<std::string>()
                << "); fixed " << fix_report["fixed"].get<size_t>() << "; reload with: "
                << fix_report["reload"].get<std::string>() << "\n";
    std::cout << AuditText(*r, UseColor());
    std::cout << (r->findings.empty() ? "clean" : Plural(r->findings.size(), "finding"));
    if (!r->ignored.empty()) std::cout << " (" << r->ignored.size() << " ignored by the policy)";
    std::cout << "\n";
  }
  return r->findings.empty() ? exit_code::kOk : exit_code::kChanges;
}

}  // namespace mw
