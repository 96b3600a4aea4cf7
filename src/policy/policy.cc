#include "policy/policy.h"

#include <strings.h>
#include <sys/stat.h>

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <functional>
#include <set>

#include "util/fs.h"
#include "util/text.h"

namespace mw {

std::string SourcePos::ToString() const {
  if (line <= 0) return file;
  return file + ":" + std::to_string(line) + ":" + std::to_string(column);
}

const char* BackendName(BackendKind k) {
  switch (k) {
    case BackendKind::kAuto: return "auto";
    case BackendKind::kNftables: return "nftables";
    case BackendKind::kIptables: return "iptables";
    case BackendKind::kUfw: return "ufw";
  }
  return "?";
}

int TlsVersionRank(const std::string& version) {
  static const char* names[] = {"SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"};
  for (int i = 0; i < 5; ++i)
    if (strcasecmp(version.c_str(), names[i]) == 0) return i;
  if (strcasecmp(version.c_str(), "TLSv1.0") == 0) return 1;
  return -1;
}

TlsPolicy Policy::TlsFor(const PortPolicy* port) const {
  TlsPolicy t = tls.value_or(TlsPolicy{});
  if (port && port->tls) {
    if (port->tls->min_days_left) t.min_days_left = port->tls->min_days_left;
    if (port->tls->min_version) t.min_version = port->tls->min_version;
    t.where = port->tls->where;
  }
  return t;
}

bool InAllowlists(const Policy& policy, const PortPolicy& port, const std::string& address) {
  Cidr a;
  std::string err;
  if (address.empty() || !ParseCidr(address, &a, &err)) return false;
  for (const auto& name : port.allow) {
    auto it = policy.allowlists.find(name);
    if (it == policy.allowlists.end()) continue;
    for (const auto& c : it->second.entries)
      if (CidrContains(c, a)) return true;
  }
  return false;
}

uint16_t KnownServicePort(const std::string& name) {
  static const std::map<std::string, uint16_t> kServices = {
      {"imap", 143},       {"imaps", 993}, {"pop3", 110}, {"pop3s", 995},
      {"submission", 587}, {"submissions", 465}, {"smtp", 25}, {"managesieve", 4190},
  };
  auto it = kServices.find(name);
  return it == kServices.end() ? 0 : it->second;
}

namespace {

constexpr size_t kMaxErrors = 50;
constexpr size_t kMaxPolicyBytes = 16u << 20;
constexpr size_t kMaxAllowlistFileBytes = 512u << 20;
constexpr uint64_t kMaxRatePerSecond = 10000;
constexpr uint32_t kMaxBurst = 10000;

constexpr const char* kEveryAddress =
    "0.0.0.0/0 and ::/0 allow every address: give the port 'state: open' instead of an allowlist";

/// A port's name as written (its key): printable UTF-8, no control characters (no ANSI escapes,
/// NUL or newlines to reach a terminal or a log), at most 64 bytes.
bool ValidPortName(const std::string& s) {
  if (s.empty() || s.size() > 64 || !IsValidUtf8(s)) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) return false;
    if (c == 0xC2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) < 0xA0) return false;  // C1 controls
  }
  return true;
}

bool ValidName(const std::string& s) {
  if (s.empty() || s.size() > 32) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'; });
}

/// Collects problems and the partially built policy of one load.
class Loader {
 public:
  explicit Loader(Policy* policy) : p_(policy) {}

  void Error(const SourcePos& at, const std::string& msg) {
    if (errors_.size() < kMaxErrors) errors_.push_back(at.ToString() + ": " + msg);
    else truncated_ = true;
  }
  void RawError(const std::string& msg) {
    if (errors_.size() < kMaxErrors) errors_.push_back(msg);
  }
  SourcePos At(const YAML::Node& n) const {
    const YAML::Mark m = n.Mark();
    return SourcePos{file_, m.line + 1, m.column + 1};
  }
  SourcePos AtFile() const { return SourcePos{file_, 0, 0}; }

  /// How an error quotes a token of `file` (default: the file being read): a short escaped
  /// excerpt in quotes, or nothing at all when others cannot read that file (a policy pointed
  /// at /etc/shadow must not print its hashes).
  std::string Q(const std::string& token, const std::string& file = "", size_t max = 80) const {
    const std::string& f = file.empty() ? file_ : file;
    if (private_files_.count(f)) return "(content not shown: " + f + " is not readable by others)";
    return "'" + Excerpt(token, max) + "'";
  }

  void LoadText(const std::string& text, const std::string& file, bool hide = false) {
    file_ = file;
    hide_ = hide;
    if (hide) private_files_.insert(file);
    if (text.size() > kMaxPolicyBytes) {
      Error(AtFile(), "policy file is larger than 16 MiB");
      return;
    }
    if (text.find('\0') != std::string::npos) {
      Error(AtFile(), "policy file contains NUL bytes (binary, not YAML)");
      return;
    }
    YAML::Node root;
    try {
      root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      std::string msg = e.msg == "bad file" ? "YAML nesting is too deep (more than 500 levels)"
                                            : e.msg;
      Error(SourcePos{file, e.mark.line + 1, e.mark.column + 1}, "YAML syntax: " + msg);
      return;
    }
    if (!root || root.IsNull()) {
      Error(AtFile(), "policy file is empty (expected at least 'version: 1')");
      return;
    }
    if (!root.IsMap()) {
      Error(At(root), "the policy must be a mapping of keys (version, backend, allowlists, ports, dovecot, tls)");
      return;
    }
    p_->files.push_back(file);
    bool have_version = false;
    ForEachKey(root, {"version", "backend", "allowlists", "ports", "dovecot", "tls"},
               [&](const std::string& key, const YAML::Node& k, const YAML::Node& v) {
                 if (key == "version") {
                   have_version = true;
                   Version(v);
                 } else if (key == "backend") {
                   Backend(v);
                 } else if (key == "allowlists") {
                   Allowlists(v);
                 } else if (key == "ports") {
                   Ports(v);
                 } else if (key == "dovecot") {
                   Dovecot(k, v);
                 } else if (key == "tls") {
                   TlsPolicy t = p_->tls.value_or(TlsPolicy{});
                   if (Tls(v, &t)) p_->tls = t;
                 }
               });
    if (!have_version) Error(At(root), "missing 'version: 1'");
  }

  /// After all files: allow-list references, ports sorted.
  void Finish() {
    for (const auto& [port, ref] : allow_refs_) {
      (void)port;
      if (!p_->allowlists.count(ref.first)) {
        std::string known;
        for (const auto& [n, a] : p_->allowlists) known += (known.empty() ? "" : ", ") + n;
        Error(ref.second, "unknown allowlist " + Q(ref.first, ref.second.file) +
                              (known.empty() ? " (no allowlists are defined)" : " (defined: " + known + ")"));
      }
    }
    std::sort(p_->ports.begin(), p_->ports.end(),
              [](const PortPolicy& a, const PortPolicy& b) { return a.port < b.port; });
  }

  Status Result() const {
    if (errors_.empty()) return Status::Ok();
    std::string all;
    for (const auto& e : errors_) all += (all.empty() ? "" : "\n") + e;
    if (truncated_) all += "\n(further errors not shown)";
    return Status::Invalid(all);
  }

 private:
  using KeyFn = std::function<void(const std::string&, const YAML::Node&, const YAML::Node&)>;

  /// Walks a mapping; reports duplicate keys, non-scalar keys and keys outside `allowed`
  /// (unless `allowed` is empty, meaning any key).
  void ForEachKey(const YAML::Node& map, std::initializer_list<const char*> allowed, const KeyFn& fn) {
    std::map<std::string, SourcePos> seen;
    for (auto it = map.begin(); it != map.end(); ++it) {
      // Copies: yaml-cpp's iterator hands out a temporary pair, so references into it dangle
      // (found by the policy fuzzer under ASan).
      const YAML::Node k = it->first;
      const YAML::Node v = it->second;
      if (!k.IsScalar()) {
        Error(At(k), "keys must be plain names");
        continue;
      }
      std::string key = k.Scalar();
      auto [pos, inserted] = seen.emplace(key, At(k));
      if (!inserted) {
        Error(At(k), "duplicate key " + Q(key) + " (first at line " + std::to_string(pos->second.line) + ")");
        continue;
      }
      if (allowed.size() > 0 &&
          std::none_of(allowed.begin(), allowed.end(), [&](const char* a) { return key == a; })) {
        std::string list;
        for (const char* a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
        Error(At(k), "unknown key " + Q(key) + " (expected one of: " + list + ")");
        continue;
      }
      fn(key, k, v);
    }
  }

  bool Scalar(const YAML::Node& v, const std::string& what, std::string* out) {
    if (!v.IsScalar()) {
      Error(At(v), what + " must be a single value");
      return false;
    }
    *out = v.Scalar();
    return true;
  }

  void Version(const YAML::Node& v) {
    std::string s;
    if (!Scalar(v, "'version'", &s)) return;
    if (s != "1") Error(At(v), "unsupported version " + Q(s) + " (this mailward reads version 1)");
  }

  void Backend(const YAML::Node& v) {
    std::string s;
    if (!Scalar(v, "'backend'", &s)) return;
    BackendKind k;
    if (s == "auto") k = BackendKind::kAuto;
    else if (s == "nftables") k = BackendKind::kNftables;
    else if (s == "iptables") k = BackendKind::kIptables;
    else if (s == "ufw") k = BackendKind::kUfw;
    else {
      Error(At(v), "unknown backend " + Q(s) + " (expected auto, nftables, iptables or ufw)");
      return;
    }
    if (backend_set_ && k != p_->backend) {
      Error(At(v), "backend already set to '" + std::string(BackendName(p_->backend)) + "' at " +
                       backend_pos_.ToString());
      return;
    }
    backend_set_ = true;
    backend_pos_ = At(v);
    p_->backend = k;
  }

  void Allowlists(const YAML::Node& v) {
    if (v.IsNull()) return;
    if (!v.IsMap()) {
      Error(At(v), "'allowlists' must map names to lists of addresses");
      return;
    }
    ForEachKey(v, {}, [&](const std::string& name, const YAML::Node& k, const YAML::Node& body) {
      if (!ValidName(name)) {
        Error(At(k), "allowlist name " + Q(name) + " must be 1-32 letters, digits, '_' or '-'");
        return;
      }
      Allowlist& al = p_->allowlists[name];
      if (al.name.empty()) {
        al.name = name;
        al.where = At(k);
      }
      if (body.IsSequence()) {
        for (const YAML::Node& item : body) {
          if (!item.IsScalar()) {
            Error(At(item), "allowlist " + Q(name) + ": each entry must be an address or CIDR");
            continue;
          }
          Cidr c;
          std::string err;
          if (!ParseCidr(item.Scalar(), &c, &err)) {
            Error(At(item), "allowlist " + Q(name) + ": " + (hide_ ? "not an IPv4 or IPv6 address or CIDR" : err));
            continue;
          }
          if (c.prefix == 0) {
            Error(At(item), "allowlist " + Q(name) + ": " + kEveryAddress);
            continue;
          }
          al.entries.push_back(c);
        }
      } else if (body.IsMap()) {
        ForEachKey(body, {"file"}, [&](const std::string&, const YAML::Node&, const YAML::Node& f) {
          std::string path;
          if (!Scalar(f, "'file'", &path)) return;
          if (path.empty()) {
            Error(At(f), "allowlist " + Q(name) + ": empty file name");
            return;
          }
          if (path[0] != '/') path = DirOf(file_) + "/" + path;
          ReadAllowlistFile(al, path, At(f));
        });
      } else if (body.IsNull()) {
        // An empty list: allowed (nobody is allowlisted).
      } else {
        Error(At(body), "allowlist " + Q(name) + " must be a list of addresses or {file: PATH}");
      }
    });
  }

  void ReadAllowlistFile(Allowlist& al, const std::string& path, const SourcePos& at) {
    // Root reads it and opens ports by it: it must be root's own, in root's own directories.
    Status trusted = CheckTrusted(path, TrustedKind::kPolicy);
    if (!trusted.ok() && trusted.code() == Code::kRefused) {
      Error(at, "allowlist " + Q(al.name) + ": " + trusted.message());
      return;
    }
    auto text = ReadFile(path);
    if (!text.ok()) {
      Error(at, "allowlist " + Q(al.name) + ": " + text.status().message());
      return;
    }
    if (text->size() > kMaxAllowlistFileBytes) {
      Error(at, "allowlist " + Q(al.name) + ": " + path + " is larger than 512 MiB");
      return;
    }
    // A file others cannot read (file: /etc/shadow) may hold secrets: its errors quote nothing.
    const bool quote = WorldReadable(path);
    const std::string hidden = "not an address or CIDR (content not shown: " + path +
                               " is not readable by others; is it really an allowlist?)";
    al.files.push_back(path);
    const std::string& s = *text;
    const size_t n = s.size();
    al.entries.reserve(al.entries.size() + n / 12);
    size_t pos = 0;
    int line = 0;
    // One pass a line: skip blanks, take the token, stop at '#' or the end of the line.
    while (pos < n) {
      ++line;
      // The common line first: an IPv4 address alone, as generated lists hold them.
      {
        const void* nl = std::memchr(s.data() + pos, '\n', n - pos);
        size_t eol = nl ? static_cast<size_t>(static_cast<const char*>(nl) - s.data()) : n;
        Cidr c;
        if (eol - pos >= 7 && eol - pos <= 15 && ParseIpv4Host(std::string_view(s.data() + pos, eol - pos), &c.addr)) {
          c.family = Family::kV4;
          c.prefix = 32;
          al.entries.push_back(c);
          pos = eol + 1;
          continue;
        }
      }
      size_t i = pos;
      while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r')) ++i;
      size_t b = i;
      while (i < n && s[i] != '\n' && s[i] != '#' && s[i] != ' ' && s[i] != '\t' && s[i] != '\r') ++i;
      size_t e = i;
      while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r')) ++i;
      bool extra = i < n && s[i] != '\n' && s[i] != '#';
      while (i < n && s[i] != '\n') ++i;
      if (b < e) {
        std::string_view tok(s.data() + b, e - b);
        // The position is built only for an error: 100,000 good lines cost no string copies.
        auto where = [&] { return SourcePos{path, line, static_cast<int>(b - pos) + 1}; };
        Cidr c;
        std::string err;
        if (extra) Error(where(), quote ? "one address or CIDR per line, found '" + Excerpt(std::string_view(s.data() + b, i - b)) + "'" : hidden);
        else if (!ParseCidr(tok, &c, &err)) Error(where(), quote ? err : hidden);
        else if (c.prefix == 0) Error(where(), kEveryAddress);
        else al.entries.push_back(c);
      } else if (extra) {
        Error(SourcePos{path, line, static_cast<int>(e - pos) + 1}, "unexpected text");
      }
      pos = i + 1;
    }
  }

  /// `tls: {min_days_left: N, min_version: TLSv1.2}`; fields given override those in *t.
  bool Tls(const YAML::Node& v, TlsPolicy* t) {
    if (!v.IsMap()) {
      Error(At(v), "'tls' must be a mapping, e.g. {min_days_left: 14, min_version: TLSv1.2}");
      return false;
    }
    bool ok = true;
    t->where = At(v);
    ForEachKey(v, {"min_days_left", "min_version"}, [&](const std::string& key, const YAML::Node&, const YAML::Node& val) {
      std::string s;
      if (!Scalar(val, "'" + key + "'", &s)) { ok = false; return; }
      if (key == "min_days_left") {
        int n = -1;
        auto r = std::from_chars(s.data(), s.data() + s.size(), n);
        if (r.ec != std::errc() || r.ptr != s.data() + s.size() || n < 0 || n > 3650) {
          Error(At(val), "min_days_left '" + s + "' is not a number of days from 0 to 3650");
          ok = false;
        } else {
          t->min_days_left = n;
        }
      } else if (TlsVersionRank(s) < 0) {
        Error(At(val), "min_version '" + s + "' is not one of TLSv1, TLSv1.1, TLSv1.2, TLSv1.3");
        ok = false;
      } else {
        t->min_version = s;
      }
    });
    return ok;
  }

  void Ports(const YAML::Node& v) {
    if (v.IsNull()) return;
    if (!v.IsMap()) {
      Error(At(v), "'ports' must map service names to settings");
      return;
    }
    ForEachKey(v, {}, [&](const std::string& name, const YAML::Node& k, const YAML::Node& body) {
      if (!ValidPortName(name)) {
        Error(At(k), "port name " + Q(name, file_, 40) +
                         " must be 1-64 printable characters (no control characters, escapes or newlines)");
        return;
      }
      PortPolicy pp;
      pp.name = name;
      pp.where = At(k);
      pp.port = KnownServicePort(name);
      if (!body.IsMap()) {
        Error(At(body), "port " + Q(name) + " must be a mapping with at least 'state'");
        return;
      }
      bool have_state = false, ok = true;
      ForEachKey(body, {"state", "port", "allow", "action", "rate_limit", "tls"},
                 [&](const std::string& key, const YAML::Node&, const YAML::Node& val) {
                   std::string s;
                   if (key == "state") {
                     have_state = true;
                     if (!Scalar(val, "'state'", &s)) { ok = false; return; }
                     if (s == "open") pp.state = PortState::kOpen;
                     else if (s == "closed") pp.state = PortState::kClosed;
                     else { Error(At(val), "state must be 'open' or 'closed', not " + Q(s)); ok = false; }
                   } else if (key == "port") {
                     if (!Scalar(val, "'port'", &s)) { ok = false; return; }
                     int n = -1;
                     auto r = std::from_chars(s.data(), s.data() + s.size(), n);
                     if (r.ec != std::errc() || r.ptr != s.data() + s.size() || n < 1 || n > 65535) {
                       Error(At(val), "port " + Q(s) + " is not a number from 1 to 65535");
                       ok = false;
                     } else {
                       pp.port = static_cast<uint16_t>(n);
                     }
                   } else if (key == "action") {
                     if (!Scalar(val, "'action'", &s)) { ok = false; return; }
                     if (s == "drop") pp.action = Action::kDrop;
                     else if (s == "reject") pp.action = Action::kReject;
                     else { Error(At(val), "action must be 'drop' or 'reject', not " + Q(s)); ok = false; }
                   } else if (key == "allow") {
                     if (!val.IsSequence()) {
                       Error(At(val), "'allow' must be a list of allowlist names, e.g. [office]");
                       ok = false;
                       return;
                     }
                     for (const YAML::Node& item : val) {
                       if (!item.IsScalar()) {
                         Error(At(item), "'allow' entries must be allowlist names");
                         ok = false;
                         continue;
                       }
                       if (std::find(pp.allow.begin(), pp.allow.end(), item.Scalar()) != pp.allow.end()) {
                         Error(At(item), "allowlist " + Q(item.Scalar()) + " is listed twice");
                         continue;
                       }
                       pp.allow.push_back(item.Scalar());
                       allow_refs_.push_back({pp.port, {item.Scalar(), At(item)}});
                     }
                   } else if (key == "rate_limit") {
                     if (!Scalar(val, "'rate_limit'", &s)) { ok = false; return; }
                     RateLimit rl;
                     std::string err;
                     if (!ParseRate(s, &rl, &err)) { Error(At(val), err); ok = false; }
                     else pp.rate_limit = rl;
                   } else if (key == "tls") {
                     TlsPolicy t;
                     if (Tls(val, &t)) pp.tls = t;
                     else ok = false;
                   }
                 });
      if (!have_state) {
        Error(At(k), "port " + Q(name) + " needs 'state: open' or 'state: closed'");
        ok = false;
      }
      if (pp.port == 0) {
        Error(At(k), Q(name) +
                         " is not a known service (imap, imaps, pop3, pop3s, submission, "
                         "submissions, smtp, managesieve); give it 'port:'");
        ok = false;
      }
      if (pp.state == PortState::kOpen && !pp.allow.empty() && ok) {
        Error(At(k), "port " + Q(name) + " is open to everyone; 'allow' only applies to closed ports");
        ok = false;
      }
      if (!ok) return;
      for (const PortPolicy& other : p_->ports) {
        if (other.port == pp.port) {
          Error(At(k), "port " + std::to_string(pp.port) + " is already defined as '" + other.name +
                           "' at " + other.where.ToString());
          return;
        }
      }
      p_->ports.push_back(pp);
    });
  }

  bool ParseRate(const std::string& s, RateLimit* rl, std::string* err) const {
    // "N/unit" or "N/unit burst M"
    std::string main = s, burst;
    auto sp = s.find(" burst ");
    if (sp != std::string::npos) {
      main = s.substr(0, sp);
      burst = s.substr(sp + 7);
    }
    auto slash = main.find('/');
    auto bad = [&] {
      *err = "rate_limit " + Q(s) + " must look like 20/minute (units: second, minute, hour, day), "
             "optionally followed by 'burst N'";
      return false;
    };
    if (slash == std::string::npos) return bad();
    uint32_t n = 0;
    auto r = std::from_chars(main.data(), main.data() + slash, n);
    if (r.ec != std::errc() || r.ptr != main.data() + slash || n == 0) return bad();
    std::string unit = main.substr(slash + 1);
    if (unit == "second") rl->unit_seconds = 1;
    else if (unit == "minute") rl->unit_seconds = 60;
    else if (unit == "hour") rl->unit_seconds = 3600;
    else if (unit == "day") rl->unit_seconds = 86400;
    else return bad();
    // iptables' hashlimit (and its kernel side) take at most 10000 a second and a burst of at
    // most 10000; nftables the same, so that a policy means the same on every backend.
    if (static_cast<uint64_t>(n) > kMaxRatePerSecond * rl->unit_seconds) {
      *err = "rate_limit " + Q(s) + " is too high: at most " + std::to_string(kMaxRatePerSecond) +
             "/second (" + std::to_string(kMaxRatePerSecond * 60) + "/minute, " + std::to_string(kMaxRatePerSecond * 3600) +
             "/hour, " + std::to_string(kMaxRatePerSecond * 86400) + "/day)";
      return false;
    }
    rl->count = n;
    if (!burst.empty()) {
      uint32_t b = 0;
      auto rb = std::from_chars(burst.data(), burst.data() + burst.size(), b);
      if (rb.ec != std::errc() || rb.ptr != burst.data() + burst.size()) return bad();
      if (b < 1 || b > kMaxBurst) {
        *err = "rate_limit " + Q(s) + ": burst must be from 1 to " + std::to_string(kMaxBurst);
        return false;
      }
      rl->burst = b;
    }
    rl->text = s;
    return true;
  }

  void Dovecot(const YAML::Node& k, const YAML::Node& v) {
    if (dovecot_set_) {
      Error(At(k), "'dovecot' is already set at " + dovecot_pos_.ToString());
      return;
    }
    dovecot_set_ = true;
    dovecot_pos_ = At(k);
    p_->dovecot.enabled = true;
    if (v.IsNull()) return;
    if (!v.IsMap()) {
      Error(At(v), "'dovecot' must be a mapping (config, ignore)");
      return;
    }
    ForEachKey(v, {"config", "ignore"}, [&](const std::string& key, const YAML::Node&, const YAML::Node& val) {
      if (key == "config") {
        std::string s;
        if (Scalar(val, "'config'", &s)) p_->dovecot.config = s;
      } else {
        if (val.IsNull()) return;
        if (!val.IsSequence()) {
          Error(At(val), "'ignore' must be a list of finding ids");
          return;
        }
        for (const YAML::Node& item : val) {
          if (!item.IsScalar()) Error(At(item), "'ignore' entries must be finding ids");
          else p_->dovecot.ignore.push_back(item.Scalar());
        }
      }
    });
  }

  Policy* p_;
  std::string file_;
  std::vector<std::string> errors_;
  bool truncated_ = false;
  bool hide_ = false;  ///< the file being read is not readable by others
  std::set<std::string> private_files_;
  bool backend_set_ = false, dovecot_set_ = false;
  SourcePos backend_pos_, dovecot_pos_;
  std::vector<std::pair<uint16_t, std::pair<std::string, SourcePos>>> allow_refs_;
};

}  // namespace

Result<std::vector<std::string>> PolicyFiles(const std::string& path) {
  std::vector<std::string> files;
  auto add_dropins = [&](const std::string& dir) -> Status {
    std::string d = dir + "/policy.d";
    struct stat st;
    if (lstat(d.c_str(), &st) != 0) return Status::Ok();  // no drop-ins
    // Someone else's policy.d beside root's policy (in /tmp, say) must not add to it.
    MW_RETURN_IF_ERROR(CheckTrusted(d, TrustedKind::kPolicy));
    auto more = ListFiles(d, ".yaml");
    if (!more.ok()) return more.status();
    files.insert(files.end(), more->begin(), more->end());
    return Status::Ok();
  };
  if (IsDirectory(path)) {
    MW_RETURN_IF_ERROR(CheckTrusted(path, TrustedKind::kPolicy));
    if (Exists(path + "/policy.yaml")) {
      files.push_back(path + "/policy.yaml");
      MW_RETURN_IF_ERROR(add_dropins(path));
    } else {
      auto all = ListFiles(path, ".yaml");
      if (!all.ok()) return all.status();
      files = *all;
    }
    if (files.empty()) return Status::Invalid(path + ": no policy files (*.yaml) in this directory");
  } else {
    if (!Exists(path))
      return Status::Invalid(path + ": policy file not found. To start: 'mailward init' writes one from what this host "
                             "runs (mail ports listening, Dovecot's listeners, your SSH port), or copy a shipped example: "
                             "cp /usr/share/mailward/policies/default.yaml " + path + " (other examples beside it); "
                             "--policy FILE reads another file");
    files.push_back(path);
    auto slash = path.rfind('/');
    std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
    if (base == "policy.yaml") MW_RETURN_IF_ERROR(add_dropins(DirOf(path)));
  }
  for (const auto& f : files) MW_RETURN_IF_ERROR(CheckTrusted(f, TrustedKind::kPolicy));
  return files;
}

Result<Policy> LoadPolicy(const std::vector<std::string>& files) {
  Policy policy;
  Loader loader(&policy);
  for (const auto& f : files) {
    auto text = ReadFile(f);
    if (!text.ok()) {
      loader.RawError(text.status().message());
      continue;
    }
    loader.LoadText(*text, f, !WorldReadable(f));
  }
  loader.Finish();
  Status s = loader.Result();
  if (!s.ok()) return s;
  return policy;
}

Result<Policy> ParsePolicyText(const std::string& text, const std::string& name) {
  Policy policy;
  Loader loader(&policy);
  loader.LoadText(text, name);
  loader.Finish();
  Status s = loader.Result();
  if (!s.ok()) return s;
  return policy;
}

}  // namespace mw
