#include "dovecot/config.h"

#include <arpa/inet.h>
#include <glob.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <limits.h>
#include <stdlib.h>
#include <strings.h>

#include <algorithm>
#include <set>

#include "util/fs.h"
#include "util/text.h"

namespace mw::dovecot {
namespace {

constexpr int kMaxIncludeDepth = 32;        // files including files; siblings of a glob do not count
constexpr size_t kMaxSectionDepth = 100000;
constexpr size_t kMaxFileBytes = 16u << 20;
constexpr size_t kMaxValueBytes = 1u << 20;  // `x = $x $x` repeated doubles each time
constexpr size_t kMaxIncludeFiles = 10000;   // files read in all (doveconf takes 1000 in one glob)

class DiskFileSource : public FileSource {
 public:
  Result<std::string> Read(const std::string& path) override { return ReadFile(path); }
  std::vector<std::string> Glob(const std::string& pattern) override {
    // As Dovecot: GLOB_BRACE, glob's own order (each brace alternative sorted on its own).
    std::vector<std::string> out;
    glob_t g{};
    if (glob(pattern.c_str(), GLOB_BRACE, nullptr, &g) == 0)
      for (size_t i = 0; i < g.gl_pathc; ++i) out.push_back(g.gl_pathv[i]);
    globfree(&g);
    return out;
  }
  bool Private(const std::string& path) override { return !WorldReadable(path); }
  std::string Canonical(const std::string& path) override {
    char buf[PATH_MAX];
    return realpath(path.c_str(), buf) ? std::string(buf) : path;
  }
  std::optional<std::string> Resolve(const std::string& host) override {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0 || !res) return std::nullopt;
    char buf[INET6_ADDRSTRLEN] = "";
    if (res->ai_family == AF_INET)
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr, buf, sizeof buf);
    else if (res->ai_family == AF_INET6)
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(res->ai_addr)->sin6_addr, buf, sizeof buf);
    freeaddrinfo(res);
    if (!buf[0]) return std::nullopt;
    return std::string(buf);
  }
};

/// Dovecot's IS_WHITE is ' ' and '\t'; '\r' is taken as white too so CRLF files read the same.
bool IsWhite(char c) { return c == ' ' || c == '\t' || c == '\r'; }

/// Dovecot's str_unescape: a backslash drops and keeps the next character; a final one drops.
std::string StrUnescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\') {
      if (++i >= s.size()) break;
    }
    out += s[i];
  }
  return out;
}

/// The matches of one `!include` glob not read yet: opened one after another from the including
/// frame when the one before ends, so 1000 matches are 1000 siblings read in turn, not 1000 files
/// held at once. Their names count as open from the include line on (as on Dovecot's input stack).
struct Pending {
  std::vector<std::string> paths;  ///< last first: popped from the back
  int depth = 0;
  bool try_only = false;
  std::string where;  ///< "file:line: " of the include line
};

struct Frame {
  std::string path;
  std::string text;
  size_t pos = 0;
  int line = 0;
  int depth = 0;
  bool hide = false;  ///< not readable by others: errors quote nothing of it
  Pending pending;
};

/// Setting names and section types: what a Dovecot setting name can be made of. Anything else is
/// an unknown setting to doveconf too, and is refused without quoting more than an excerpt.
bool ValidKey(const std::string& k) {
  if (k.empty()) return false;
  return std::all_of(k.begin(), k.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '/' || c == '.' || c == '@';
  });
}

/// Dovecot's fix_relative_path: relative to the directory of the file being read.
std::string FixRelative(const std::string& path, const std::string& from) {
  if (!path.empty() && path[0] == '/') return path;
  auto slash = from.rfind('/');
  if (slash == std::string::npos) return path;
  return from.substr(0, slash) + "/" + path;
}

bool FiltersEqual(const Filter& a, const Filter& b) {
  auto net_eq = [](const std::optional<Net>& x, const std::optional<Net>& y) {
    if (!x || !y) return !x && !y;
    return x->bits == y->bits && x->cidr.family == y->cidr.family && x->cidr.addr == y->cidr.addr;
  };
  return a.service == b.service && net_eq(a.remote, b.remote) && net_eq(a.local, b.local) &&
         strcasecmp(a.local_name.c_str(), b.local_name.c_str()) == 0;
}

int Bits(const std::optional<Net>& n) { return n ? n->bits : 0; }

/// config_filter_match_service + config_filter_match_rest.
bool FilterMatches(const Filter& mask, const Context& ctx) {
  if (!mask.service.empty()) {
    if (ctx.protocol.empty()) return false;
    if (mask.service[0] == '!') {
      if (ctx.protocol == mask.service.substr(1)) return false;
    } else if (ctx.protocol != mask.service) {
      return false;
    }
  }
  if (!mask.local_name.empty()) {
    if (ctx.local_name.empty()) return false;
    bool any = false;
    for (const auto& n : SplitWords(mask.local_name)) {
      if (n == ctx.local_name || (n.rfind("*.", 0) == 0 && ctx.local_name.size() > n.size() - 1 &&
                                  ctx.local_name.compare(ctx.local_name.size() - (n.size() - 1), n.size() - 1, n.substr(1)) == 0))
        any = true;
    }
    if (!any) return false;
  }
  if (Bits(mask.remote) != 0) {
    if (Bits(ctx.remote) == 0 || !NetContains(*mask.remote, ctx.remote->cidr)) return false;
  }
  if (Bits(mask.local) != 0) {
    if (Bits(ctx.local) == 0 || !NetContains(*mask.local, ctx.local->cidr)) return false;
  }
  return true;
}

/// config_filter_parser_cmp: most specific first.
int FilterCmp(const Filter& a, const Filter& b) {
  if (!a.local_name.empty() != !b.local_name.empty()) return a.local_name.empty() ? 1 : -1;
  if (Bits(a.local) != Bits(b.local)) return Bits(a.local) > Bits(b.local) ? -1 : 1;
  if (Bits(a.remote) != Bits(b.remote)) return Bits(a.remote) > Bits(b.remote) ? -1 : 1;
  if (a.service.empty() != b.service.empty()) return a.service.empty() ? 1 : -1;
  return 0;
}

/// config_filter_is_superset.
bool IsSuperset(const Filter& sup, const Filter& f) {
  if (Bits(sup.local) > Bits(f.local)) return false;
  if (Bits(sup.remote) > Bits(f.remote)) return false;
  if (!sup.local_name.empty() && f.local_name.empty()) return false;
  if (!sup.service.empty() && f.service.empty()) return false;
  return true;
}

/// Settings of Dovecot 2.3's auth module (auth-settings.c): refused inside local/remote blocks.
bool IsAuthSetting(const std::string& key) {
  static const std::set<std::string> keys = {
      "auth_mechanisms", "auth_realms", "auth_default_realm", "auth_cache_size", "auth_cache_ttl",
      "auth_cache_negative_ttl", "auth_cache_verify_password_with_worker", "auth_username_chars",
      "auth_username_translation", "auth_username_format", "auth_master_user_separator", "auth_anonymous_username",
      "auth_krb5_keytab", "auth_gssapi_hostname", "auth_winbind_helper_path", "auth_proxy_self", "auth_failure_delay",
      "auth_policy_server_url", "auth_policy_server_api_header", "auth_policy_server_timeout_msecs",
      "auth_policy_hash_mech", "auth_policy_hash_nonce", "auth_policy_request_attributes",
      "auth_policy_reject_on_fail", "auth_policy_check_before_auth", "auth_policy_check_after_auth",
      "auth_policy_report_after_auth", "auth_policy_log_only", "auth_policy_hash_truncate", "auth_stats",
      "auth_verbose", "auth_debug", "auth_debug_passwords", "auth_verbose_passwords", "auth_ssl_require_client_cert",
      "auth_ssl_username_from_cert", "auth_use_winbind", "auth_worker_max_count", "base_dir", "verbose_proctitle",
      "first_valid_uid", "last_valid_uid", "first_valid_gid", "last_valid_gid", "ssl_client_ca_dir",
      "ssl_client_ca_file"};
  return keys.count(key) > 0;
}

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

}  // namespace

std::unique_ptr<FileSource> MakeDiskFileSource() { return std::make_unique<DiskFileSource>(); }

bool ParseNet(const std::string& text, Net* out) {
  std::string addr = text, bits;
  auto slash = text.find('/');
  if (slash != std::string::npos) addr = text.substr(0, slash), bits = text.substr(slash + 1);
  Net n;
  n.text = text;
  if (addr == "localhost") addr = "127.0.0.1";  // what the resolver answers here
  if (inet_pton(AF_INET, addr.c_str(), n.cidr.addr.b.data()) == 1) {
    n.cidr.family = Family::kV4;
  } else if (inet_pton(AF_INET6, addr.c_str(), n.cidr.addr.b.data()) == 1) {
    n.cidr.family = Family::kV6;
  } else {
    return false;
  }
  int max = n.cidr.family == Family::kV4 ? 32 : 128;
  if (slash == std::string::npos) {
    n.bits = max;
  } else {
    if (bits.empty() || bits.size() > 3 || !std::all_of(bits.begin(), bits.end(), ::isdigit)) return false;
    n.bits = std::atoi(bits.c_str());
    if (n.bits > max) return false;
  }
  n.cidr.prefix = static_cast<uint8_t>(n.bits);
  *out = n;
  return true;
}

bool NetContains(const Net& net, const Cidr& a) {
  if (net.bits == 0) return true;
  if (net.cidr.family != a.family) return false;
  for (int i = 0; i < net.bits; ++i) {
    int byte = i / 8, bit = 7 - i % 8;
    if (((net.cidr.addr.b[byte] >> bit) & 1) != ((a.addr.b[byte] >> bit) & 1)) return false;
  }
  return true;
}

std::string Filter::Text() const {
  std::string out;
  auto add = [&](const std::string& k, const std::string& v) { out += (out.empty() ? "" : " ") + k + "=" + v; };
  if (!local_name.empty()) add("local_name", local_name);
  if (local) add("local", local->text);
  if (remote) add("remote", remote->text);
  if (!service.empty()) add("protocol", service);
  return out;
}

std::string Context::Text() const {
  std::string out;
  auto add = [&](const std::string& k, const std::string& v) { out += (out.empty() ? "" : " ") + k + "=" + v; };
  if (!protocol.empty()) add("protocol", protocol);
  if (remote) add("remote", remote->text);
  if (local) add("local", local->text);
  if (!local_name.empty()) add("lname", local_name);  // doveconf -f calls it lname
  return out;
}

std::string DefaultValue(const std::string& key, bool is_24) {
  // doveconf -h on an empty file (Debian 12, 2.3.19); 2.4 where it differs.
  static const std::map<std::string, std::string> d23 = {
      {"auth_debug", "no"}, {"auth_debug_passwords", "no"}, {"auth_verbose_passwords", "no"}, {"auth_verbose", "no"},
      {"auth_mechanisms", "plain"}, {"auth_anonymous_username", "anonymous"}, {"disable_plaintext_auth", "yes"},
      {"ssl", "yes"}, {"ssl_min_protocol", "TLSv1.2"}, {"mail_debug", "no"}, {"verbose_ssl", "no"},
      // protocols: empty in Debian's build, which adds each protocol from protocols.d.
      {"protocols", ""}, {"login_trusted_networks", ""}, {"ssl_key", ""}, {"ssl_cert", ""}, {"mail_plugins", ""},
      {"login_greeting", "Dovecot (Debian) ready."},
  };
  static const std::map<std::string, std::string> d24 = {
      {"auth_debug_passwords", "no"}, {"auth_verbose_passwords", "no"}, {"auth_verbose", "no"},
      {"auth_mechanisms", "plain"}, {"auth_anonymous_username", "anonymous"}, {"auth_allow_cleartext", "no"},
      {"ssl", "yes"}, {"ssl_min_protocol", "TLSv1.2"}, {"mail_debug", "no"}, {"protocols", ""},
      {"login_trusted_networks", ""}, {"log_debug", ""}, {"auth_allow_weak_schemes", "no"},
      {"ssl_server_key_file", ""}, {"ssl_server_cert_file", ""}, {"verbose_ssl", "no"},
  };
  const auto& d = is_24 ? d24 : d23;
  auto it = d.find(key);
  return it == d.end() ? "" : it->second;
}

bool IsBoolSetting(const std::string& path) {
  static const std::set<std::string> keys = {
      "auth_debug", "auth_debug_passwords", "auth_verbose", "disable_plaintext_auth", "mail_debug", "verbose_ssl",
      "auth_allow_cleartext", "auth_allow_weak_schemes", "ssl_prefer_server_ciphers", "ssl_require_crl",
      "auth_ssl_require_client_cert", "verbose_proctitle", "shutdown_clients", "mail_full_filesystem_access",
  };
  if (keys.count(path)) return true;
  // service/X/inet_listener/Y/ssl and .../haproxy
  auto pos = path.find("/inet_listener/");
  if (pos != std::string::npos) {
    auto last = path.substr(path.rfind('/') + 1);
    return last == "ssl" || last == "haproxy" || last == "reuse_port";
  }
  return false;
}

const Setting* Config::Global(const std::string& key) const { return Lookup(key, Context{}); }

const Setting* Config::Lookup(const std::string& path, const Context& ctx, bool* conflict) const {
  if (conflict) *conflict = false;
  auto idx = by_path.find(path);
  if (idx == by_path.end()) return nullptr;
  // The last assignment per matching filter.
  std::map<int, const Setting*> last;
  for (size_t i : idx->second) {
    const Setting& s = settings[i];
    if (FilterMatches(filters[static_cast<size_t>(s.filter)], ctx)) last[s.filter] = &s;
  }
  if (last.empty()) return nullptr;
  // Filters in creation order (the global one first), stably sorted by specificity: the first wins.
  std::vector<int> order;
  for (const auto& [f, s] : last) order.push_back(f);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return FilterCmp(filters[static_cast<size_t>(a)], filters[static_cast<size_t>(b)]) < 0;
  });
  // A less specific filter that also sets it must be a superset of the one before, else Dovecot
  // refuses the connection's settings.
  if (conflict)
    for (size_t i = 1; i < order.size(); ++i)
      if (!IsSuperset(filters[static_cast<size_t>(order[i])], filters[static_cast<size_t>(order[i - 1])])) *conflict = true;
  return last[order[0]];
}

std::vector<const Section*> Config::ScopeOf(const Setting& s) const {
  std::vector<const Section*> out;
  for (int i = s.section; i >= 0; i = sections[static_cast<size_t>(i)].parent) out.push_back(&sections[static_cast<size_t>(i)]);
  std::reverse(out.begin(), out.end());
  return out;
}

Result<Config> Parse(const std::string& path, FileSource& files) {
  Config cfg;
  cfg.filters.push_back(Filter{});
  std::vector<Frame> stack;
  std::vector<int> sections;          // the open sections (indices into cfg.sections)
  std::set<std::string> open_files;   // canonical names on the include stack
  // Per filter: key path -> value so far (for `$key`).
  std::vector<std::map<std::string, std::string>> values(1);
  std::vector<std::map<std::string, std::string>> runtime_values(1);  // the same, as Dovecot runs
  std::string full_line;              // a line continued with '\', across files as in Dovecot
  std::string full_file;
  int full_line_no = 0;
  std::string full_private;           // a file others cannot read that full_line comes from

  size_t files_read = 0;
  // Reads `p` and pushes it; its canonical name is already in open_files (the caller checked
  // for recursion). A file !include_try cannot read is dropped from open_files and skipped.
  auto open = [&](const std::string& p, const std::string& canon, int depth, bool try_only,
                  const std::string& where) -> Status {
    if (depth > kMaxIncludeDepth) return Status::Invalid(where + "includes nested deeper than 32 files");
    if (++files_read > kMaxIncludeFiles)
      return Status::Invalid(where + "more than " + std::to_string(kMaxIncludeFiles) + " files included in all");
    auto text = files.Read(p);  // a FIFO or a device is refused at once (ReadFile)
    if (!text.ok()) {
      if (try_only) {
        open_files.erase(canon);
        return Status::Ok();
      }
      return Status::Invalid(where + text.status().message());
    }
    if (text->size() > kMaxFileBytes) return Status::Invalid(where + p + ": larger than 16 MiB");
    if (text->find('\0') != std::string::npos)
      return Status::Invalid(where + p + ": binary data (NUL bytes), not a Dovecot config");
    cfg.files.push_back(p);
    Frame fr{p, std::move(text.value()), 0, 0, depth};
    fr.hide = files.Private(p);
    stack.push_back(std::move(fr));
    return Status::Ok();
  };
  // What an error may quote of a file's text: nothing from a file others cannot read (an
  // `!include /etc/shadow`), else a short escaped excerpt.
  auto quote_of = [&](const std::string& file, bool hide, const std::string& text, bool quotes = true) {
    if (hide) return std::string("(content not shown: ") + file + " is not readable by others)";
    return quotes ? "'" + Excerpt(text) + "'" : Excerpt(text);
  };
  open_files.insert(files.Canonical(path));
  MW_RETURN_IF_ERROR(open(path, files.Canonical(path), 0, false, ""));
  bool first_setting = true;
  auto cur_filter = [&] { return sections.empty() ? 0 : cfg.sections[static_cast<size_t>(sections.back())].filter; };
  // The non-filter section path around the current line: "service/imap-login/inet_listener/imap/",
  // kept as a string plus its length at each open section. Past 8 levels it stops growing
  // (nothing mailward judges is that deep, and 20,000 nested sections must stay linear).
  std::string prefix;
  std::vector<size_t> prefix_len;
  std::vector<int> filter_stack;  // the filters of the open filter sections, innermost last

  while (!stack.empty()) {
    Frame& f = stack.back();
    if (!f.pending.paths.empty()) {
      // The next match of this frame's include glob; `f` may move when it is pushed.
      std::string next = std::move(f.pending.paths.back());
      f.pending.paths.pop_back();
      const int depth = f.pending.depth;
      const bool try_only = f.pending.try_only;
      const std::string where = f.pending.where;
      MW_RETURN_IF_ERROR(open(next, files.Canonical(next), depth, try_only, where));
      continue;
    }
    if (f.pos >= f.text.size()) {
      open_files.erase(files.Canonical(f.path));
      stack.pop_back();
      continue;
    }
    size_t eol = f.text.find('\n', f.pos);
    if (eol == std::string::npos) eol = f.text.size();
    std::string line = f.text.substr(f.pos, eol - f.pos);
    f.pos = eol + 1;
    ++f.line;
    const std::string file = f.path;
    const int depth = f.depth;
    const bool hide = f.hide;
    // Whose text an error would quote (a continued line: the private part's file, if any).
    const std::string* quote_file = &file;
    bool quote_hide = hide;
    auto quote = [&](const std::string& text, bool quotes) { return quote_of(*quote_file, quote_hide, text, quotes); };
    int line_no = f.line;
    std::string where = file + ":" + std::to_string(line_no);

    // config_parse_line: leading blanks; a comment or empty line is skipped and drops a pending
    // continuation.
    size_t b = 0;
    while (b < line.size() && IsWhite(line[b])) ++b;
    if (b == line.size() || line[b] == '#') {
      full_line.clear();
      continue;
    }
    line.erase(0, b);
    // Strip a comment: '#' outside quotes; an unclosed quote runs to the end of the line.
    for (size_t p = 0; p < line.size(); ++p) {
      if (line[p] == '\'' || line[p] == '"') {
        char quote = line[p];
        for (++p; p < line.size() && line[p] != quote; ++p)
          if (line[p] == '\\' && p + 1 < line.size()) ++p;
        if (p >= line.size()) break;
      } else if (line[p] == '#') {
        line.erase(p);
        break;
      }
    }
    while (!line.empty() && IsWhite(line.back())) line.pop_back();
    if (!line.empty() && line.back() == '\\') {
      line.pop_back();
      while (!line.empty() && IsWhite(line.back())) line.pop_back();
      if (!line.empty()) {
        if (full_line.empty()) full_file = file, full_line_no = line_no, full_private.clear();
        if (hide) full_private = file;  // a continued line quotes nothing if a part is private
        full_line += line + " ";
      }
      continue;
    }
    if (!full_line.empty()) {
      line = full_line + line;
      full_line.clear();
      where = full_file + ":" + std::to_string(full_line_no);
      line_no = full_line_no;
      if (!hide && !full_private.empty()) quote_file = &full_private, quote_hide = true;
    }
    // The key runs to a blank or '='.
    size_t k = 0;
    while (k < line.size() && !IsWhite(line[k]) && line[k] != '=') ++k;
    std::string key = line.substr(0, k);
    size_t r = k;
    while (r < line.size() && IsWhite(line[r])) ++r;
    std::string rest = line.substr(r);

    if (key == "!include" || key == "!include_try") {
      bool try_only = key == "!include_try";
      std::string pattern = FixRelative(rest, file);
      std::vector<std::string> matches = files.Glob(pattern);
      if (matches.empty()) {
        if (try_only) continue;
        if (pattern.find_first_of("*?[{") == std::string::npos)
          return Status::Invalid(where + ": " + quote(pattern, false) +
                                 ": cannot open: No such file or directory (!include)");
        return Status::Invalid(where + ": !include " + quote(pattern, false) + ": no matching files");
      }
      if (depth + 1 > kMaxIncludeDepth) return Status::Invalid(where + ": includes nested deeper than 32 files");
      // Every match counts as open from here on (siblings are on Dovecot's input stack too),
      // checked last first as Dovecot pushes them; then they are read one after another, the
      // first match first.
      for (auto it = matches.rbegin(); it != matches.rend(); ++it) {
        std::string canon = files.Canonical(*it);
        if (!open_files.insert(canon).second)
          return Status::Invalid(where + ": Recursive include file: " + *it);
      }
      f.pending = Pending{std::vector<std::string>(matches.rbegin(), matches.rend()), depth + 1, try_only, where + ": "};
      continue;
    }

    if (!rest.empty() && rest[0] == '=') {
      if (key.empty()) return Status::Invalid(where + ": a setting without a name: " + quote(line, true));
      if (!ValidKey(key)) return Status::Invalid(where + ": bad setting name " + quote(key, true));
      std::string v = rest.substr(1);
      size_t vb = 0;
      while (vb < v.size() && IsWhite(v[vb])) ++vb;
      v.erase(0, vb);
      std::string value, keyfile, runtime;
      bool have_runtime = false;
      std::string spath = prefix + key;
      int filter = cur_filter();
      if (!v.empty() && v[0] == '<') {
        size_t p = 1;
        while (p < v.size() && IsWhite(v[p])) ++p;
        keyfile = FixRelative(v.substr(p), file);
        value = "<" + v.substr(p);
        auto content = files.Read(keyfile);
        runtime = content.ok() ? *content : "";
        have_runtime = true;
      } else if (!v.empty() && v[0] != '\'' && v[0] != '"' && v.find('$') != std::string::npos) {
        // config_write_keyvariable without expand_values: only `$key` of the key itself expands,
        // to its value so far in this filter, else in the enclosing ones, else the default.
        size_t pos = 0;
        while (true) {
          size_t end = v.find(' ', pos);
          std::string tok = v.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
          if (tok.size() > 1 && tok[0] == '$' && tok.substr(1) == key) {
            auto own = [&](std::vector<std::map<std::string, std::string>>& vals) {
              for (auto it = filter_stack.rbegin(); it != filter_stack.rend(); ++it) {
                auto& m = vals[static_cast<size_t>(*it)];
                if (auto f2 = m.find(key); f2 != m.end()) return f2->second;
              }
              auto f2 = vals[0].find(key);
              return f2 != vals[0].end() ? f2->second : DefaultValue(key, cfg.is_24);
            };
            value += own(values);
            runtime += own(runtime_values);
          } else {
            value += tok;
            runtime += tok;
          }
          have_runtime = true;
          if (value.size() > kMaxValueBytes || runtime.size() > kMaxValueBytes)
            return Status::Invalid(where + ": the value of " + quote(key, true) +
                                   " grows beyond 1 MiB by $setting expansion (does it repeat itself, like x = $x $x?)");
          if (end == std::string::npos) break;
          value += ' ';
          runtime += ' ';
          pos = end;
          while (pos < v.size() && IsWhite(v[pos])) ++pos;
          if (pos >= v.size()) break;
        }
      } else if (!v.empty() && (v[0] == '"' || v[0] == '\'') && v.back() == v[0]) {
        value = v.size() == 1 ? "" : StrUnescape(v.substr(1, v.size() - 2));
      } else {
        value = v;
      }
      if (IsBoolSetting(spath)) {
        std::string l = Lower(value);
        if (l == "yes" || l == "y" || value == "1") value = "yes";
        else if (l == "no") value = "no";
        else return Status::Invalid(where + ": Invalid boolean value: " + quote(value, false) + " (use yes or no)");
      }
      if (spath == "ssl" && value != "yes" && value != "no" && value != "required")
        return Status::Invalid(where + ": Invalid value: " + quote(value, false) + " (ssl is yes, no or required)");
      if (!cfg.is_24 && spath == key && IsAuthSetting(key)) {
        const Filter& fl = cfg.filters[static_cast<size_t>(filter)];
        if (Bits(fl.remote) > 0 || Bits(fl.local) > 0 || !fl.local_name.empty())
          return Status::Invalid(where + ": Auth settings not supported inside local/remote blocks: " + key);
      }
      if (first_setting) cfg.is_24 = key == "dovecot_config_version";
      first_setting = false;
      if (!have_runtime) runtime = value;
      values[static_cast<size_t>(filter)][spath] = value;
      runtime_values[static_cast<size_t>(filter)][spath] = runtime;
      cfg.settings.push_back(
          Setting{key, spath, value, file, line_no, sections.empty() ? -1 : sections.back(), filter, keyfile, runtime});
      continue;
    }

    if (key == "}" && rest.empty()) {
      if (sections.empty()) return Status::Invalid(where + ": '}' without an open section (Dovecot: Unexpected '}')");
      if (cfg.sections[static_cast<size_t>(sections.back())].is_filter) filter_stack.pop_back();
      prefix.resize(prefix_len.back());
      prefix_len.pop_back();
      sections.pop_back();
      continue;
    }

    // section_type [name] {
    std::string name;
    std::string tail = rest;
    if (tail.empty() || tail[0] != '{') {
      if (tail.empty() || tail[0] != '"') {
        size_t e = 0;
        while (e < tail.size() && !IsWhite(tail[e])) ++e;
        name = tail.substr(0, e);
        tail.erase(0, e);
      } else {
        size_t q = tail.find('"', 1);
        if (q == std::string::npos) tail.clear();
        else name = StrUnescape(tail.substr(1, q - 1)), tail.erase(0, q + 1);
      }
      size_t w = 0;
      while (w < tail.size() && IsWhite(tail[w])) ++w;
      tail.erase(0, w);
      if (tail.empty() || tail[0] != '{')
        return Status::Invalid(where + ": expected 'key = value', a section or '}': " + quote(line, true) +
                               " (Dovecot: Expecting '{')");
    }
    if (tail.size() > 1) return Status::Invalid(where + ": Garbage after '{': " + quote(line, true));
    if (key.empty()) return Status::Invalid(where + ": a section without a type: " + quote(line, true));
    if (!ValidKey(key)) return Status::Invalid(where + ": bad section name " + quote(key, true));
    if (sections.size() >= kMaxSectionDepth) return Status::Invalid(where + ": sections nested too deeply");

    Section sec{key, name, file, line_no, sections.empty() ? -1 : sections.back(), cur_filter(), false};
    if (key == "protocol" || key == "local" || key == "remote" || key == "local_name") {
      Filter parent = cfg.filters[static_cast<size_t>(sec.filter)];
      Filter fl = parent;
      fl.file = file;
      fl.line = line_no;
      if (key == "protocol") {
        if (!parent.service.empty()) return Status::Invalid(where + ": Nested protocol { protocol { .. } } block not allowed");
        fl.service = name;
      } else if (key == "local_name") {
        if (Bits(parent.remote) > 0) return Status::Invalid(where + ": remote { local_name { .. } } not allowed (use local_name { remote { .. } } instead)");
        if (!parent.service.empty()) return Status::Invalid(where + ": protocol { local_name { .. } } not allowed (use local_name { protocol { .. } } instead)");
        fl.local_name = name;
      } else {
        bool is_local = key == "local";
        if (is_local && Bits(parent.remote) > 0) return Status::Invalid(where + ": remote { local { .. } } not allowed (use local { remote { .. } } instead)");
        if (!parent.service.empty()) return Status::Invalid(where + ": protocol { " + key + " { .. } } not allowed (use " + key + " { protocol { .. } } instead)");
        if (is_local && !parent.local_name.empty()) return Status::Invalid(where + ": local_name { local { .. } } not allowed (use local { local_name { .. } } instead)");
        Net n;
        if (!ParseNet(name, &n)) {
          // A host name, resolved as Dovecot does (its first address; "/bits" kept).
          auto slash = name.find('/');
          auto addr = files.Resolve(name.substr(0, slash));
          if (!addr || !ParseNet(*addr + (slash == std::string::npos ? "" : name.substr(slash)), &n))
            return Status::Invalid(where + ": " + key + " " + quote(name, true) + ": not an address, a network or a host name that resolves");
          n.text = name;
        }
        const auto& pn = is_local ? parent.local : parent.remote;
        if (Bits(pn) > n.bits || (Bits(pn) > 0 && !NetContains(*pn, n.cidr)))
          return Status::Invalid(where + ": " + key + " net1 { " + key + " net2 { .. } } requires net2 to be inside net1");
        (is_local ? fl.local : fl.remote) = n;
      }
      int found = -1;
      for (size_t i = 0; i < cfg.filters.size(); ++i)
        if (FiltersEqual(cfg.filters[i], fl)) found = static_cast<int>(i);
      if (found < 0) {
        cfg.filters.push_back(fl);
        values.emplace_back();
        runtime_values.emplace_back();
        found = static_cast<int>(cfg.filters.size() - 1);
      }
      sec.filter = found;
      sec.is_filter = true;
    }
    cfg.sections.push_back(sec);
    sections.push_back(static_cast<int>(cfg.sections.size() - 1));
    prefix_len.push_back(prefix.size());
    if (sec.is_filter) filter_stack.push_back(sec.filter);
    else if (prefix_len.size() <= 8) prefix += key + "/" + name + "/";
  }
  for (size_t i = 0; i < cfg.settings.size(); ++i) cfg.by_path[cfg.settings[i].path].push_back(i);
  for (int i : sections) {
    const Section& s = cfg.sections[static_cast<size_t>(i)];
    cfg.warnings.push_back(s.file + ":" + std::to_string(s.line) + ": section " +
                           quote_of(s.file, files.Private(s.file), s.type + (s.name.empty() ? "" : " " + s.name)) +
                           " is never closed (Dovecot accepts it)");
  }
  return cfg;
}

}  // namespace mw::dovecot
