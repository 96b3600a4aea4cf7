#include "dovecot/audit.h"

#include <sys/stat.h>

#include <algorithm>
#include <set>
#include <sstream>

#include "policy/address.h"
#include "util/fs.h"

namespace mw::dovecot {
namespace {

class DiskFileStat : public FileStat {
 public:
  std::optional<FileMode> Stat(const std::string& path) override {
    struct stat st;
    if (stat(path.c_str(), &st) != 0) return std::nullopt;
    return FileMode{st.st_uid, st.st_gid, st.st_mode};
  }
};

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

bool Yes(const std::string& v) { return Lower(v) == "yes"; }

/// Dovecot 2.3 defaults of the settings the audit judges (doveconf -d on 2.3.19); 2.4 where it differs.
const std::map<std::string, std::string>& Defaults23() {
  static const std::map<std::string, std::string> d = {
      {"auth_debug", "no"},          {"auth_debug_passwords", "no"},   {"auth_verbose_passwords", "no"},
      {"auth_mechanisms", "plain"},  {"auth_anonymous_username", "anonymous"},
      {"disable_plaintext_auth", "yes"}, {"ssl", "yes"},             {"ssl_min_protocol", "TLSv1.2"},
      // protocols: empty in Debian's build, which adds each protocol from protocols.d (upstream
      // builds default to "imap pop3 lmtp"); doveconf on Debian 12 is the oracle here.
      {"mail_debug", "no"},          {"protocols", ""},              {"login_trusted_networks", ""},
      {"ssl_key", ""},               {"ssl_cert", ""},
  };
  return d;
}
const std::map<std::string, std::string>& Defaults24() {
  static const std::map<std::string, std::string> d = {
      {"auth_debug_passwords", "no"}, {"auth_verbose_passwords", "no"}, {"auth_mechanisms", "plain"},
      {"auth_anonymous_username", "anonymous"}, {"auth_allow_cleartext", "no"}, {"ssl", "yes"},
      {"ssl_min_protocol", "TLSv1.2"}, {"mail_debug", "no"}, {"protocols", ""}, {"login_trusted_networks", ""},
      {"log_debug", ""}, {"auth_allow_weak_schemes", "no"}, {"ssl_server_key_file", ""}, {"ssl_server_cert_file", ""},
  };
  return d;
}

/// Is this `remote`/`local` filter about loopback only ("127.0.0.1", "127.0.0.0/8", "::1")?
bool LoopbackOnly(const std::string& filter) {
  auto words = SplitWords(filter, true);
  if (words.empty()) return false;
  for (const auto& w : words) {
    if (w == "localhost") continue;
    Cidr c;
    std::string err;
    if (!ParseCidr(w, &c, &err)) return false;
    if (c.family == Family::kV4 && !(c.addr.b[0] == 127 && c.prefix >= 8)) return false;
    if (c.family == Family::kV6) {
      Addr one{};
      one.b[15] = 1;
      if (!(c.addr == one && c.prefix == 128)) return false;
    }
  }
  return true;
}

class Auditor {
 public:
  Auditor(const Config& cfg, FileStat& stat) : cfg_(cfg), stat_(stat) {
    defaults_ = cfg.is_24 ? &Defaults24() : &Defaults23();
  }

  Effective Eff(const std::string& key) {
    Effective e;
    if (const Setting* s = cfg_.Global(key)) {
      e = {s->value, s->file, s->line};
    } else {
      auto d = defaults_->find(key);
      e.value = d == defaults_->end() ? "" : d->second;
    }
    result_.effective[key] = e;
    return e;
  }

  void Add(std::string id, std::string severity, std::optional<std::string> setting, const Effective& e,
           std::string message, std::string fix) {
    result_.findings.push_back(Finding{std::move(id), std::move(severity), std::move(setting), e.value, e.file,
                                       e.line, std::move(message), std::move(fix)});
  }

  AuditResult Run() {
    result_.version = cfg_.is_24 ? "2.4" : "2.3";
    result_.files = cfg_.files;
    Logging();
    Anonymous();
    bool cleartext = Cleartext();
    Tls();
    Listeners(cleartext);
    TrustedNetworks();
    Files();
    return std::move(result_);
  }

 private:
  void Logging() {
    if (!cfg_.is_24) {
      auto d = Eff("auth_debug");
      if (Yes(d.value))
        Add("auth-debug", "medium", "auth_debug", d,
            "authentication debug logging writes every login's details (user names, mechanisms, "
            "passdb lookups) to the log",
            "set auth_debug = no (or remove the line)");
    } else {
      auto d = Eff("log_debug");
      if (d.value.find("category=auth") != std::string::npos)
        Add("auth-debug", "medium", "log_debug", d,
            "authentication debug logging writes every login's details to the log",
            "remove category=auth from log_debug");
    }
    auto dp = Eff("auth_debug_passwords");
    if (Yes(dp.value))
      Add("auth-debug-passwords", "critical", "auth_debug_passwords", dp,
          "passwords (and password mismatches) are written to the log in plain text",
          "set auth_debug_passwords = no");
    auto vp = Eff("auth_verbose_passwords");
    std::string v = Lower(vp.value);
    std::string kind = v.substr(0, v.find(':'));
    if (kind == "plain" || kind == "yes")
      Add("auth-verbose-passwords", "critical", "auth_verbose_passwords", vp,
          "failed logins log the password that was tried, in plain text (often a real password with a typo)",
          "set auth_verbose_passwords = no");
    else if (kind == "sha1")
      Add("auth-verbose-passwords", "medium", "auth_verbose_passwords", vp,
          "failed logins log a SHA1 hash of the password tried; unsalted SHA1 of a password is easily cracked",
          "set auth_verbose_passwords = no");
    // mail_debug: global, or set in any block (protocol imap { mail_debug = yes }).
    auto md = Eff("mail_debug");
    if (Yes(md.value)) {
      Add("mail-debug", "low", "mail_debug", md, "mail debug logging records mailbox activity in detail",
          "set mail_debug = no");
    } else {
      for (const auto& s : cfg_.settings) {
        if (s.section >= 0 && s.key == "mail_debug" && Yes(s.value)) {
          Add("mail-debug", "low", "mail_debug", {s.value, s.file, s.line},
              "mail debug logging is on in " + ScopeText(s) + ": it records mailbox activity in detail",
              "remove mail_debug = yes from that block");
          break;
        }
      }
    }
    if (cfg_.is_24) {
      auto w = Eff("auth_allow_weak_schemes");
      if (Yes(w.value))
        Add("weak-password-schemes", "medium", "auth_allow_weak_schemes", w,
            "weak password schemes (PLAIN, CRYPT, MD5 variants) are accepted from the passdb",
            "set auth_allow_weak_schemes = no and rehash the stored passwords");
    }
  }

  std::string ScopeText(const Setting& s) {
    std::string out;
    for (const Section* sec : cfg_.ScopeOf(s)) out += (out.empty() ? "" : " > ") + sec->type + (sec->name.empty() ? "" : " " + sec->name);
    return out.empty() ? "the global scope" : "'" + out + "'";
  }

  void Anonymous() {
    auto mech = Eff("auth_mechanisms");
    auto user = Eff("auth_anonymous_username");
    for (const auto& w : SplitWords(Lower(mech.value), true)) {
      if (w == "anonymous") {
        Add("anonymous-login", "high", "auth_mechanisms", mech,
            "the ANONYMOUS mechanism lets anyone log in without a password, as user '" + user.value + "'",
            "remove anonymous from auth_mechanisms (and auth_anonymous_username)");
        break;
      }
    }
  }

  /// True when cleartext authentication is allowed globally to network clients.
  bool Cleartext() {
    auto ssl = Eff("ssl");
    bool ssl_required = Lower(ssl.value) == "required";  // refuses every auth before TLS
    const char* key = cfg_.is_24 ? "auth_allow_cleartext" : "disable_plaintext_auth";
    auto allows = [&](const std::string& v) { return cfg_.is_24 ? Yes(v) : Lower(v) == "no"; };
    auto g = Eff(key);
    bool global = allows(g.value) && !ssl_required;
    std::string fix = cfg_.is_24 ? "set auth_allow_cleartext = no (and ssl = required)"
                                 : "set disable_plaintext_auth = yes (or ssl = required)";
    if (global)
      Add("cleartext-auth", "high", key, g,
          "passwords may be sent without TLS: any client on the network can log in in cleartext, and "
          "anyone on the path can read the password",
          fix);
    if (ssl_required) return false;
    // Scoped: remote/local/protocol blocks that allow it, unless only for loopback.
    for (const auto& s : cfg_.settings) {
      if (s.section < 0 || s.key != key || !allows(s.value)) continue;
      bool loopback = false;
      for (const Section* sec : cfg_.ScopeOf(s))
        if ((sec->type == "remote" || sec->type == "local") && LoopbackOnly(sec->name)) loopback = true;
      if (loopback || global) continue;
      Add("cleartext-auth", "high", key, {s.value, s.file, s.line},
          "cleartext passwords are allowed in " + ScopeText(s) + ", which is not limited to loopback", fix);
    }
    return global;
  }

  void Tls() {
    auto ssl = Eff("ssl");
    if (Lower(ssl.value) == "no")
      Add("ssl-disabled", "high", "ssl", ssl,
          "TLS is off: no STARTTLS and no imaps/pop3s, so every password and message crosses the network in cleartext",
          "set ssl = required with ssl_cert and ssl_key (2.4: ssl_server_cert_file, ssl_server_key_file)");
    auto minp = Eff("ssl_min_protocol");
    static const std::set<std::string> weak = {"sslv3", "tlsv1", "tlsv1.1", "ssl3", "tlsv1.0"};
    if (weak.count(Lower(minp.value)))
      Add("weak-tls-protocol", "medium", "ssl_min_protocol", minp,
          minp.value + " is deprecated (RFC 8996) and open to downgrade attacks", "set ssl_min_protocol = TLSv1.2");
  }

  /// Port of `service <svc> { inet_listener <name> { port = N } }`, or the default.
  std::pair<int, Effective> ListenerPort(const std::string& svc, const std::string& listener, int def) {
    std::pair<int, Effective> out{def, Effective{std::to_string(def), "", 0}};
    for (const auto& s : cfg_.settings) {
      if (s.key != "port") continue;
      auto scope = cfg_.ScopeOf(s);
      if (scope.size() == 2 && scope[0]->type == "service" && scope[0]->name == svc &&
          scope[1]->type == "inet_listener" && scope[1]->name == listener) {
        out = {std::atoi(s.value.c_str()), Effective{s.value, s.file, s.line}};
      }
    }
    return out;
  }

  void Listeners(bool cleartext) {
    auto protocols = Eff("protocols");
    if (!cleartext) return;
    auto words = SplitWords(protocols.value, true);
    struct L {
      const char* proto;
      const char* svc;
      int port;
    };
    for (const L& l : {L{"imap", "imap-login", 143}, L{"pop3", "pop3-login", 110}}) {
      if (std::find(words.begin(), words.end(), l.proto) == words.end()) continue;
      auto [port, where] = ListenerPort(l.svc, l.proto, l.port);
      if (port == 0) continue;
      Effective e = where.file.empty() ? protocols : where;
      Add("plaintext-listener", "high", where.file.empty() ? "protocols" : "port", e,
          std::string(l.proto) + " listens on port " + std::to_string(port) +
              " while cleartext authentication is allowed: logins on it can carry passwords unencrypted",
          std::string("require TLS for authentication (see cleartext-auth), or close the listener: service ") + l.svc +
              " { inet_listener " + l.proto + " { port = 0 } } (clients then use " +
              (std::string(l.proto) == "imap" ? "993" : "995") + ")");
    }
  }

  void TrustedNetworks() {
    auto t = Eff("login_trusted_networks");
    for (const auto& w : SplitWords(t.value, true)) {
      Cidr c;
      std::string err;
      if (!ParseCidr(w, &c, &err)) continue;
      if ((c.family == Family::kV4 && c.prefix <= 8) || (c.family == Family::kV6 && c.prefix <= 16)) {
        Add("trusted-networks-broad", "medium", "login_trusted_networks", t,
            w + " is trusted: its clients count as secured, so they may log in in cleartext and set their "
                "own client IP (XCLIENT)",
            "list only the proxies and hosts that really need it in login_trusted_networks");
        break;
      }
    }
  }

  void Files() {
    for (const auto& f : cfg_.files) {
      auto m = stat_.Stat(f);
      if (!m) continue;
      if (m->mode & S_IWOTH)
        Add("config-writable", "high", std::nullopt, Effective{"", f, 0},
            "the configuration file is writable by every user: anyone on the host can change Dovecot's "
            "settings (and, through them, run code as root)",
            "chmod o-w " + f);
      else if (m->uid != 0)
        Add("config-writable", "high", std::nullopt, Effective{"", f, 0},
            "the configuration file belongs to uid " + std::to_string(m->uid) + ", not root: that user can change Dovecot's settings",
            "chown root " + f);
    }
    // Private keys: 2.3 `ssl_key = </path`, 2.4 `ssl_server_key_file = /path`; global and in blocks.
    std::set<std::string> seen;
    for (const auto& s : cfg_.settings) {
      std::string path;
      if (s.key == "ssl_key" && !s.value.empty() && s.value[0] == '<') path = s.value.substr(1);
      else if (s.key == "ssl_server_key_file" || s.key == "ssl_key_file") path = s.value;
      if (path.empty()) continue;
      while (!path.empty() && path[0] == ' ') path.erase(0, 1);
      if (path[0] != '/') path = DirOf(s.file) + "/" + path;
      if (!seen.insert(path).second) continue;
      auto m = stat_.Stat(path);
      if (!m) continue;
      if (m->mode & (S_IROTH | S_IWOTH))
        Add("ssl-key-exposed", "critical", std::nullopt, Effective{"", path, 0},
            std::string("the TLS private key is ") + ((m->mode & S_IWOTH) ? "writable" : "readable") +
                " by every user: anyone on the host can impersonate this server",
            "chmod 600 " + path + " (owner root)");
    }
  }

  const Config& cfg_;
  FileStat& stat_;
  const std::map<std::string, std::string>* defaults_;
  AuditResult result_;
};

}  // namespace

std::unique_ptr<FileStat> MakeDiskFileStat() { return std::make_unique<DiskFileStat>(); }

int SeverityRank(const std::string& s) {
  static const char* order[] = {"critical", "high", "medium", "low", "info"};
  for (int i = 0; i < 5; ++i)
    if (s == order[i]) return i;
  return 5;
}

AuditResult Audit(const Config& cfg, FileStat& stat, const std::vector<std::string>& ignore) {
  AuditResult r = Auditor(cfg, stat).Run();
  std::vector<Finding> kept;
  for (auto& f : r.findings) {
    if (std::find(ignore.begin(), ignore.end(), f.id) != ignore.end()) r.ignored.push_back(f.id);
    else kept.push_back(std::move(f));
  }
  std::stable_sort(kept.begin(), kept.end(), [](const Finding& a, const Finding& b) {
    if (SeverityRank(a.severity) != SeverityRank(b.severity)) return SeverityRank(a.severity) < SeverityRank(b.severity);
    if (a.file != b.file) return a.file < b.file;
    return a.line < b.line;
  });
  r.findings = std::move(kept);
  return r;
}

}  // namespace mw::dovecot
