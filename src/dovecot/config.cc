#include "dovecot/config.h"

#include <glob.h>
#include <limits.h>
#include <stdlib.h>

#include <algorithm>
#include <set>

#include "util/fs.h"
#include "util/text.h"

namespace mw::dovecot {
namespace {

constexpr int kMaxIncludeDepth = 32;
constexpr size_t kMaxSectionDepth = 100000;
constexpr size_t kMaxFileBytes = 16u << 20;
constexpr size_t kMaxIncludeFiles = 10000;     // files read in all (doveconf takes 1000 in one glob)
constexpr size_t kMaxValueBytes = 1u << 20;    // one setting's value after $setting expansion

class DiskFileSource : public FileSource {
 public:
  Result<std::string> Read(const std::string& path) override { return ReadFile(path); }
  std::vector<std::string> Glob(const std::string& pattern) override {
    std::vector<std::string> out;
    glob_t g{};
    if (glob(pattern.c_str(), 0, nullptr, &g) == 0)
      for (size_t i = 0; i < g.gl_pathc; ++i) out.push_back(g.gl_pathv[i]);
    globfree(&g);
    std::sort(out.begin(), out.end());
    return out;
  }
  bool Private(const std::string& path) override { return !WorldReadable(path); }
  std::string Canonical(const std::string& path) override {
    char buf[PATH_MAX];
    return realpath(path.c_str(), buf) ? std::string(buf) : path;
  }
};

bool IsWhite(char c) { return c == ' ' || c == '\t' || c == '\r'; }

std::string Trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && IsWhite(s[b])) ++b;
  while (e > b && IsWhite(s[e - 1])) --e;
  return s.substr(b, e - b);
}

/// Cuts a comment: '#' outside quotes starts one (Dovecot does the same, with a warning when no
/// blank precedes it).
std::string StripComment(const std::string& s) {
  char quote = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (quote) {
      if (c == '\\' && i + 1 < s.size()) ++i;
      else if (c == quote) quote = 0;
    } else if (c == '"' || c == '\'') {
      quote = c;
    } else if (c == '#') {
      return s.substr(0, i);
    }
  }
  return s;
}

/// "value" or 'value' with backslash escapes, else the text as is.
std::string Unquote(const std::string& v) {
  if (v.size() >= 2 && (v[0] == '"' || v[0] == '\'') && v.back() == v[0]) {
    std::string out;
    for (size_t i = 1; i + 1 < v.size(); ++i) {
      if (v[i] == '\\' && i + 2 < v.size()) ++i;
      out += v[i];
    }
    return out;
  }
  return v;
}

bool ValidKey(const std::string& k) {
  if (k.empty()) return false;
  return std::all_of(k.begin(), k.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '/' || c == '.';
  });
}

struct Frame {
  std::string path;
  std::string text;
  size_t pos = 0;
  int line = 0;
  size_t sections_at_start = 0;
  bool hide = false;  ///< not readable by others: errors quote nothing of it
  /// The rest of an `!include` glob's matches, read one after another (siblings, not nesting),
  /// last first; with where they were included from.
  std::vector<std::string> pending;
  bool pending_try = false;
  int pending_line = 0;
};

}  // namespace

std::unique_ptr<FileSource> MakeDiskFileSource() { return std::make_unique<DiskFileSource>(); }

const Setting* Config::Global(const std::string& key) const {
  for (auto it = settings.rbegin(); it != settings.rend(); ++it)
    if (it->section < 0 && it->key == key) return &*it;
  return nullptr;
}

std::vector<const Section*> Config::ScopeOf(const Setting& s) const {
  std::vector<const Section*> out;
  for (int i = s.section; i >= 0; i = sections[static_cast<size_t>(i)].parent) out.push_back(&sections[static_cast<size_t>(i)]);
  std::reverse(out.begin(), out.end());
  return out;
}

Result<Config> Parse(const std::string& path, FileSource& files) {
  Config cfg;
  std::vector<Frame> stack;
  std::vector<int> sections;  // the open sections (indices into cfg.sections)
  std::set<std::string> open_files;  // canonical names on the include stack
  std::map<std::string, std::string> globals;  // for $setting expansion

  size_t files_read = 0;
  auto open = [&](const std::string& p, const std::string& from, int from_line) -> Status {
    std::string where = from.empty() ? "" : from + ":" + std::to_string(from_line) + ": ";
    if (stack.size() >= kMaxIncludeDepth) return Status::Invalid(where + "includes nested deeper than 32 files");
    if (++files_read > kMaxIncludeFiles)
      return Status::Invalid(where + "more than " + std::to_string(kMaxIncludeFiles) + " files included in all");
    std::string canon = files.Canonical(p);
    if (open_files.count(canon)) return Status::Invalid(where + "Recursive include file: " + p);
    auto text = files.Read(p);
    if (!text.ok()) return Status::Invalid(where + text.status().message());
    if (text->size() > kMaxFileBytes) return Status::Invalid(where + p + ": larger than 16 MiB");
    if (text->find('\0') != std::string::npos) return Status::Invalid(where + p + ": binary data (NUL bytes), not a Dovecot config");
    open_files.insert(canon);
    cfg.files.push_back(p);
    Frame fr{p, std::move(text.value()), 0, 0, sections.size()};
    fr.hide = files.Private(p);
    stack.push_back(std::move(fr));
    return Status::Ok();
  };
  // What an error may quote of a line: nothing from a file others cannot read (an
  // `!include /etc/shadow`), else a short escaped excerpt.
  auto quote = [&](const Frame& fr, const std::string& text) {
    return fr.hide ? std::string("(content not shown: ") + fr.path + " is not readable by others)"
                   : "'" + Excerpt(text) + "'";
  };
  // Opens the next pending match of an include glob in `fr`; false when there is none.
  auto open_pending = [&](Frame& fr, Status* st) {
    while (!fr.pending.empty()) {
      std::string next = std::move(fr.pending.back());
      fr.pending.pop_back();
      bool try_only = fr.pending_try;
      std::string from = fr.path;
      int line = fr.pending_line;
      Status s = open(next, from, line);  // may invalidate `fr`
      if (s.ok()) return true;
      if (try_only && s.message().find("Recursive") == std::string::npos &&
          s.message().find("binary data") == std::string::npos && s.message().find("nested deeper") == std::string::npos &&
          s.message().find("in all") == std::string::npos)
        continue;  // !include_try: a missing file is fine
      *st = s;
      return true;
    }
    return false;
  };
  MW_RETURN_IF_ERROR(open(path, "", 0));
  bool first_setting = true;

  while (!stack.empty()) {
    Frame& f = stack.back();
    if (!f.pending.empty()) {
      Status st;
      if (open_pending(f, &st)) {
        if (!st.ok()) return st;
        continue;
      }
    }
    if (f.pos >= f.text.size()) {
      if (sections.size() > f.sections_at_start) {
        const Section& s = cfg.sections[static_cast<size_t>(sections.back())];
        return Status::Invalid(s.file + ":" + std::to_string(s.line) + ": section '" + s.type +
                               (s.name.empty() ? "" : " " + s.name) + "' is never closed");
      }
      open_files.erase(files.Canonical(f.path));
      stack.pop_back();
      continue;
    }
    // One logical line: physical lines joined by a trailing backslash.
    ++f.line;
    int line_no = f.line;
    std::string line;
    for (;;) {
      size_t eol = f.text.find('\n', f.pos);
      if (eol == std::string::npos) eol = f.text.size();
      std::string part = f.text.substr(f.pos, eol - f.pos);
      f.pos = eol + 1;
      if (!part.empty() && part.back() == '\r') part.pop_back();
      std::string trimmed_end = part;
      while (!trimmed_end.empty() && IsWhite(trimmed_end.back())) trimmed_end.pop_back();
      bool cont = !trimmed_end.empty() && trimmed_end.back() == '\\' && f.pos <= f.text.size();
      if (!line.empty()) part = Trim(part), trimmed_end = Trim(trimmed_end);
      if (cont) {
        trimmed_end.pop_back();
        line += trimmed_end;
        ++f.line;
        continue;
      }
      line += part;
      break;
    }
    std::string s = Trim(StripComment(line));
    if (s.empty()) continue;
    std::string where = f.path + ":" + std::to_string(line_no);

    if (s[0] == '!') {
      bool try_only = s.rfind("!include_try", 0) == 0;
      if (!try_only && s.rfind("!include", 0) != 0) return Status::Invalid(where + ": unknown directive: " + quote(f, s));
      std::string arg = Unquote(Trim(s.substr(try_only ? 12 : 8)));
      if (arg.empty()) return Status::Invalid(where + ": !include needs a file name");
      if (arg[0] != '/') arg = DirOf(f.path) + "/" + arg;
      std::vector<std::string> matches;
      if (arg.find_first_of("*?[") != std::string::npos) {
        matches = files.Glob(arg);
        if (matches.empty() && !try_only) return Status::Invalid(where + ": !include " + arg + ": no matching files");
      } else {
        matches.push_back(arg);
      }
      // The matches are read one after another from this frame, so a glob of 1000 files is
      // 1000 siblings, not 1000 levels of nesting. Last first: pending is popped from the back.
      f.pending.assign(matches.rbegin(), matches.rend());
      f.pending_try = try_only;
      f.pending_line = line_no;
      continue;
    }
    if (s == "}") {
      if (sections.size() <= f.sections_at_start) return Status::Invalid(where + ": '}' without an open section");
      sections.pop_back();
      continue;
    }
    if (s.back() == '{') {
      std::string head = Trim(s.substr(0, s.size() - 1));
      auto sp = head.find_first_of(" \t");
      Section sec{head.substr(0, sp), sp == std::string::npos ? "" : Unquote(Trim(head.substr(sp))), f.path, line_no,
                  sections.empty() ? -1 : sections.back()};
      if (!ValidKey(sec.type)) return Status::Invalid(where + ": bad section name " + quote(f, head));
      if (sections.size() >= kMaxSectionDepth) return Status::Invalid(where + ": sections nested too deeply");
      cfg.sections.push_back(sec);
      sections.push_back(static_cast<int>(cfg.sections.size() - 1));
      continue;
    }
    auto eq = s.find('=');
    if (eq == std::string::npos) return Status::Invalid(where + ": expected 'key = value', a section or '}': " + quote(f, s));
    std::string key = Trim(s.substr(0, eq));
    std::string raw = Trim(s.substr(eq + 1));
    if (!ValidKey(key)) return Status::Invalid(where + ": bad setting name " + quote(f, key));
    std::string value;
    if (!raw.empty() && (raw[0] == '"' || raw[0] == '\'')) {
      value = Unquote(raw);
    } else {
      // $setting expands to the setting's earlier global value (mail_plugins = $mail_plugins acl),
      // empty when it was never set; other $words stay as written (as doveconf does).
      for (size_t i = 0; i < raw.size();) {
        if (raw[i] == '$') {
          size_t j = i + 1;
          while (j < raw.size() && (std::isalnum(static_cast<unsigned char>(raw[j])) || raw[j] == '_')) ++j;
          std::string name = raw.substr(i + 1, j - i - 1);
          auto g = globals.find(name);
          if (j > i + 1 && (g != globals.end() || name == key)) {
            if (g != globals.end()) {
              // x = $x$x doubles at every line: 40 lines would be a terabyte.
              if (value.size() + g->second.size() > kMaxValueBytes)
                return Status::Invalid(where + ": the value of '" + key +
                                       "' grows beyond 1 MiB by $setting expansion (does it repeat itself, like x = $x$x?)");
              value += g->second;
            }
            i = j;
            continue;
          }
        }
        value += raw[i++];
      }
    }
    if (first_setting) cfg.is_24 = key == "dovecot_config_version";
    first_setting = false;
    if (sections.empty()) globals[key] = value;
    cfg.settings.push_back(Setting{key, value, f.path, line_no, sections.empty() ? -1 : sections.back()});
  }
  return cfg;
}

}  // namespace mw::dovecot
