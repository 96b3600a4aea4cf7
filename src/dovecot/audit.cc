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

/// A `remote`/`local` network that holds only loopback addresses (127.0.0.0/8 inside, ::1).
bool LoopbackNet(const Net& n) {
  if (n.bits == 0) return false;
  if (n.cidr.family == Family::kV4) return n.cidr.addr.b[0] == 127 && n.bits >= 8;
  Addr one{};
  one.b[15] = 1;
  return n.cidr.addr == one && n.bits == 128;
}

/// Login services and their default listeners (doveconf on 2.3.19).
struct DefaultListener {
  const char* name;
  int port;
  bool ssl;
};
struct LoginService {
  const char* protocol;
  const char* service;
  std::vector<DefaultListener> listeners;
};
const std::vector<LoginService>& LoginServices() {
  static const std::vector<LoginService> s = {
      {"imap", "imap-login", {{"imap", 143, false}, {"imaps", 993, true}}},
      {"pop3", "pop3-login", {{"pop3", 110, false}, {"pop3s", 995, true}}},
      {"submission", "submission-login", {{"submission", 587, false}}},
      {"sieve", "managesieve-login", {{"sieve", 4190, false}}},
  };
  return s;
}

struct Judged {
  Context ctx;
  std::string text;   ///< Context::Text()
  bool loopback = false;
};

class Auditor {
 public:
  Auditor(const Config& cfg, FileStat& stat, ValueOracle* oracle) : cfg_(cfg), stat_(stat), oracle_(oracle) {}

  /// The effective value of `key` in `ctx`: where the parser found it, the value from the oracle
  /// when there is one.
  Effective Val(const std::string& key, const Context& ctx, const Setting** where = nullptr) {
    Effective e;
    const Setting* s = cfg_.Lookup(key, ctx);
    if (where) *where = s;
    if (s) e = {s->value, s->file, s->line};
    else e.value = DefaultValue(key, cfg_.is_24);
    if (oracle_)
      if (auto v = oracle_->Get(key, ctx)) e.value = *v;
    return e;
  }

  /// A finding; the same one (id, setting, file, line, value) met again in another context only
  /// adds that context.
  void Add(std::string id, std::string severity, std::optional<std::string> setting, const Effective& e,
           std::string message, std::string fix, const std::string& ctx = "") {
    for (auto& f : result_.findings) {
      if (f.id == "plaintext-listener") continue;
      if (f.id == id && f.setting == setting && f.file == e.file && f.line == e.line && f.value == e.value) {
        if (std::find(f.contexts.begin(), f.contexts.end(), ctx) == f.contexts.end()) f.contexts.push_back(ctx);
        return;
      }
    }
    result_.findings.push_back(Finding{std::move(id), std::move(severity), std::move(setting), e.value, e.file, e.line,
                                       std::move(message), std::move(fix), {ctx}});
  }

  AuditResult Run() {
    result_.version = cfg_.is_24 ? "2.4" : "2.3";
    result_.files = cfg_.files;
    result_.warnings = cfg_.warnings;
    if (oracle_) result_.engine = "doveconf";
    auto contexts = Contexts();
    for (const auto& j : contexts) {
      std::map<std::string, Effective> values;
      for (const auto& k : JudgedKeys(cfg_.is_24)) {
        values[k] = Val(k, j.ctx);
        bool conflict = false;
        cfg_.Lookup(k, j.ctx, &conflict);
        if (conflict)
          result_.warnings.push_back(j.text + ": two filters that are not nested both set " + k +
                                     ": Dovecot refuses such connections (\"Conflict in setting " + k + "\")");
      }
      if (j.text.empty()) result_.effective = values;
      else result_.contexts.push_back(ContextValues{j.ctx, values});
    }
    for (const auto& j : contexts) {
      Logging(j);
      Anonymous(j);
      Cleartext(j);
      Tls(j);
    }
    Listeners(contexts);
    TrustedNetworks();
    Files();
    return std::move(result_);
  }

 private:
  static std::string In(const Judged& j) { return j.text.empty() ? "" : " (in " + j.text + ")"; }

  /// Every filter context Dovecot evaluates: the global one, each enabled protocol, each
  /// remote/local/local_name block alone and with each enabled protocol.
  std::vector<Judged> Contexts() {
    std::vector<Judged> out{Judged{}};
    std::vector<std::string> protos;
    for (const auto& w : SplitWords(Val("protocols", {}).value))
      if (std::find(protos.begin(), protos.end(), w) == protos.end()) protos.push_back(w);
    std::set<std::string> seen{""};
    constexpr size_t kMaxContexts = 256;  // a hostile config with 20,000 remote blocks stays fast
    auto push = [&](Context c, bool loopback) {
      std::string t = c.Text();
      if (out.size() >= kMaxContexts) {
        if (result_.warnings.empty() || result_.warnings.back().find("filter contexts") == std::string::npos)
          result_.warnings.push_back("more than " + std::to_string(kMaxContexts) +
                                     " filter contexts: only the first ones were judged");
        return;
      }
      if (seen.insert(t).second) out.push_back(Judged{c, t, loopback});
    };
    for (const auto& p : protos) push(Context{p, std::nullopt, std::nullopt, ""}, false);
    for (const auto& f : cfg_.filters) {
      Context c;
      bool loopback = false;
      if (f.remote && f.remote->bits > 0) c.remote = f.remote, loopback = LoopbackNet(*f.remote);
      // Connections to a loopback local address come from this host: secured, like loopback clients.
      if (f.local && f.local->bits > 0) c.local = f.local, loopback = loopback || LoopbackNet(*f.local);
      if (!f.local_name.empty()) c.local_name = SplitWords(f.local_name)[0];
      if (!c.remote && !c.local && c.local_name.empty()) continue;
      push(c, loopback);
      for (const auto& p : protos) {
        Context cp = c;
        cp.protocol = p;
        push(cp, loopback);
      }
    }
    return out;
  }

  void Logging(const Judged& j) {
    if (!cfg_.is_24) {
      auto d = Val("auth_debug", j.ctx);
      if (Yes(d.value))
        Add("auth-debug", "medium", "auth_debug", d,
            "authentication debug logging writes every login's details (user names, mechanisms, "
            "passdb lookups) to the log" + In(j),
            "set auth_debug = no (or remove the line)", j.text);
    } else {
      auto d = Val("log_debug", j.ctx);
      if (d.value.find("category=auth") != std::string::npos)
        Add("auth-debug", "medium", "log_debug", d,
            "authentication debug logging writes every login's details to the log" + In(j),
            "remove category=auth from log_debug", j.text);
    }
    auto dp = Val("auth_debug_passwords", j.ctx);
    if (Yes(dp.value))
      Add("auth-debug-passwords", "critical", "auth_debug_passwords", dp,
          "passwords (and password mismatches) are written to the log in plain text" + In(j),
          "set auth_debug_passwords = no", j.text);
    auto vp = Val("auth_verbose_passwords", j.ctx);
    // Dovecot compares these exactly (auth-settings.c): "PLAIN" is not plain but an invalid value.
    std::string kind = vp.value.substr(0, vp.value.find(':'));
    if (kind == "plain" || kind == "yes")
      Add("auth-verbose-passwords", "critical", "auth_verbose_passwords", vp,
          "failed logins log the password that was tried, in plain text (often a real password with a typo)" + In(j),
          "set auth_verbose_passwords = no", j.text);
    else if (kind == "sha1")
      Add("auth-verbose-passwords", "medium", "auth_verbose_passwords", vp,
          "failed logins log a SHA1 hash of the password tried; unsalted SHA1 of a password is easily cracked" + In(j),
          "set auth_verbose_passwords = no", j.text);
    auto md = Val("mail_debug", j.ctx);
    if (Yes(md.value))
      Add("mail-debug", "low", "mail_debug", md, "mail debug logging records mailbox activity in detail" + In(j),
          "set mail_debug = no (in every block that sets it)", j.text);
    if (cfg_.is_24) {
      auto w = Val("auth_allow_weak_schemes", j.ctx);
      if (Yes(w.value))
        Add("weak-password-schemes", "medium", "auth_allow_weak_schemes", w,
            "weak password schemes (PLAIN, CRYPT, MD5 variants) are accepted from the passdb" + In(j),
            "set auth_allow_weak_schemes = no and rehash the stored passwords", j.text);
    }
  }

  void Anonymous(const Judged& j) {
    const Setting* where = nullptr;
    auto mech = Val("auth_mechanisms", j.ctx, &where);
    auto user = Val("auth_anonymous_username", j.ctx);
    // What Dovecot runs with: `<file` is the file's content (doveconf -h prints `<file`).
    std::string words = where ? where->runtime : mech.value;
    // Split at any blank, newlines too: Dovecot splits at spaces only, so a file's trailing newline
    // glues itself to the last mechanism and auth refuses to start until it is fixed; the
    // mechanism is still configured, and reported.
    for (auto& c : words)
      if (c == '\n' || c == '\r') c = ' ';
    for (const auto& w : SplitWords(Lower(words), true)) {
      if (w == "anonymous") {
        Add("anonymous-login", "high", "auth_mechanisms", mech,
            "the ANONYMOUS mechanism lets anyone log in without a password, as user '" + user.value + "'" + In(j),
            "remove anonymous from auth_mechanisms (and auth_anonymous_username)", j.text);
        break;
      }
    }
  }

  const char* CleartextKey() const { return cfg_.is_24 ? "auth_allow_cleartext" : "disable_plaintext_auth"; }

  /// Whether a network client in this context may send a password before TLS.
  bool CleartextAllowed(const Context& ctx) {
    auto v = Val(CleartextKey(), ctx).value;
    bool allows = cfg_.is_24 ? Yes(v) : Lower(v) == "no";
    return allows && Lower(Val("ssl", ctx).value) != "required";  // required refuses every auth before TLS
  }

  void Cleartext(const Judged& j) {
    if (j.loopback) return;  // loopback counts as secured anyway
    if (!CleartextAllowed(j.ctx)) return;
    const char* key = CleartextKey();
    auto g = Val(key, j.ctx);
    auto ssl = Val("ssl", j.ctx);
    std::string fix = cfg_.is_24 ? "set auth_allow_cleartext = no (and ssl = required)"
                                 : "set disable_plaintext_auth = yes (or ssl = required)";
    std::string sslwhere = ssl.file.empty() ? "by default" : "at " + ssl.file + ":" + std::to_string(ssl.line);
    Add("cleartext-auth", "high", key, g,
        "passwords may be sent without TLS" + In(j) + ": clients on the network can log in in cleartext, and "
        "anyone on the path can read the password (ssl = " + ssl.value + " " + sslwhere + ")",
        fix + (ssl.file.empty() || cfg_.is_24 ? "" : "; ssl = " + ssl.value + " comes from " + sslwhere.substr(3)),
        j.text);
  }

  void Tls(const Judged& j) {
    if (j.loopback) return;
    auto ssl = Val("ssl", j.ctx);
    if (Lower(ssl.value) == "no")
      Add("ssl-disabled", "high", "ssl", ssl,
          "TLS is off" + In(j) + ": no STARTTLS and no imaps/pop3s, so every password and message crosses the network in cleartext",
          "set ssl = required with ssl_cert and ssl_key (2.4: ssl_server_cert_file, ssl_server_key_file)", j.text);
    auto minp = Val("ssl_min_protocol", j.ctx);
    static const std::set<std::string> weak = {"sslv3", "tlsv1", "tlsv1.1", "any"};
    if (weak.count(Lower(minp.value)))
      Add("weak-tls-protocol", "medium", "ssl_min_protocol", minp,
          minp.value + (Lower(minp.value) == "any" ? " accepts every TLS version the library has, TLSv1.0 included" : " is deprecated") +
              " (RFC 8996) and open to downgrade attacks" + In(j),
          "set ssl_min_protocol = TLSv1.2", j.text);
  }

  /// Each listener of each enabled login service: a port that is not 0 without `ssl = yes` is a
  /// cleartext listener; it is a finding when cleartext passwords are allowed for its protocol
  /// from some network client.
  void Listeners(const std::vector<Judged>& contexts) {
    std::vector<std::string> protos = SplitWords(Val("protocols", {}).value);
    for (const auto& ls : LoginServices()) {
      if (std::find(protos.begin(), protos.end(), ls.protocol) == protos.end()) continue;
      bool allowed = false;
      for (const auto& j : contexts)
        if (!j.loopback && j.ctx.protocol == ls.protocol && CleartextAllowed(j.ctx)) allowed = true;
      if (!allowed) continue;
      std::string base = std::string("service/") + ls.service + "/inet_listener/";
      std::vector<std::string> names;
      for (const auto& d : ls.listeners) names.push_back(d.name);
      for (const auto& s : cfg_.settings) {
        if (s.path.rfind(base, 0) != 0) continue;
        std::string rest = s.path.substr(base.size());
        std::string name = rest.substr(0, rest.find('/'));
        if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
      }
      if (oracle_) {
        std::vector<std::string> keys;
        for (const auto& name : names) keys.push_back(base + name + "/port"), keys.push_back(base + name + "/ssl");
        oracle_->Prefetch(keys, {});
      }
      for (const auto& name : names) {
        int def_port = 0;
        bool def_ssl = false;
        for (const auto& d : ls.listeners)
          if (name == d.name) def_port = d.port, def_ssl = d.ssl;
        const Setting* pw = nullptr;
        auto port = Val(base + name + "/port", {}, &pw);
        if (!pw && !oracle_) port.value = std::to_string(def_port);
        auto ssl = Val(base + name + "/ssl", {});
        bool ssl_on = ssl.file.empty() && !oracle_ ? def_ssl : Yes(ssl.value);
        if (port.value.empty() || port.value == "0" || ssl_on) continue;
        Effective e = port;
        if (e.file.empty()) e = Val("protocols", {});
        std::string lctx = std::string("listener ") + ls.service + "/" + name;
        Add("plaintext-listener", "high", e.file == port.file && pw ? std::optional<std::string>(base + name + "/port") : std::optional<std::string>("protocols"), e,
            std::string(ls.protocol) + " listens in cleartext on port " + port.value + " (inet_listener " + name +
                ") while cleartext authentication is allowed: logins on it can carry passwords unencrypted",
            std::string("require TLS for authentication (see cleartext-auth), or close the listener: service ") +
                ls.service + " { inet_listener " + name + " { port = 0 } }, or make it implicit TLS (ssl = yes)",
            lctx);
      }
    }
  }

  void TrustedNetworks() {
    auto t = Val("login_trusted_networks", {});
    for (const auto& w : SplitWords(t.value, true)) {
      Net n;
      if (!ParseNet(w, &n)) continue;
      bool v4 = n.cidr.family == Family::kV4;
      if ((v4 && n.bits <= 8) || (!v4 && n.bits <= 16)) {
        Cidr net = n.cidr;
        for (int i = n.bits; i < (v4 ? 32 : 128); ++i) net.addr.b[i / 8] &= static_cast<uint8_t>(~(1u << (7 - i % 8)));
        std::string canon = FormatAddr(net.family, net.addr) + "/" + std::to_string(n.bits);
        Add("trusted-networks-broad", "medium", "login_trusted_networks", t,
            w + (canon != w ? " (that is " + canon + ": Dovecot ignores the host bits)" : "") +
                " is trusted: its clients count as secured, so they may log in in cleartext and set their "
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
      if (s.key == "ssl_key" && !s.keyfile.empty()) path = s.keyfile;
      else if (s.key == "ssl_server_key_file" || s.key == "ssl_key_file") path = s.value;
      if (path.empty()) continue;
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
  ValueOracle* oracle_;
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

const std::vector<std::string>& JudgedKeys(bool is_24) {
  static const std::vector<std::string> k23 = {
      "auth_debug", "auth_debug_passwords", "auth_verbose_passwords", "auth_mechanisms", "auth_anonymous_username",
      "disable_plaintext_auth", "ssl", "ssl_min_protocol", "mail_debug", "protocols", "login_trusted_networks",
      "ssl_key", "ssl_cert"};
  static const std::vector<std::string> k24 = {
      "log_debug", "auth_debug_passwords", "auth_verbose_passwords", "auth_mechanisms", "auth_anonymous_username",
      "auth_allow_cleartext", "ssl", "ssl_min_protocol", "mail_debug", "protocols", "login_trusted_networks",
      "auth_allow_weak_schemes", "ssl_server_key_file", "ssl_server_cert_file"};
  return is_24 ? k24 : k23;
}

AuditResult Audit(const Config& cfg, FileStat& stat, const std::vector<std::string>& ignore, ValueOracle* oracle,
                  FileSource* files) {
  (void)files;  // `<file` contents are read by the parser (Setting::runtime)
  AuditResult r = Auditor(cfg, stat, oracle).Run();
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
