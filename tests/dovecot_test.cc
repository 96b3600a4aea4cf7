#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>

#include "dovecot/audit.h"
#include "dovecot/config.h"
#include "fakes/memory_files.h"

namespace mw::dovecot {
namespace {

using mw::testing::MemoryFiles;

#define EXPECT_HAS(hay, needle) EXPECT_NE((hay).find(needle), std::string::npos) << (hay)

Config MustParse(MemoryFiles& fs, const std::string& path = "/etc/dovecot/dovecot.conf") {
  auto r = Parse(path, fs);
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? *r : Config{};
}

std::string ParseError(MemoryFiles& fs, const std::string& path = "/etc/dovecot/dovecot.conf") {
  auto r = Parse(path, fs);
  EXPECT_FALSE(r.ok());
  return r.ok() ? "" : r.status().message();
}

/// The ids of the findings for one dovecot.conf text.
std::vector<std::string> Ids(const std::string& text, MemoryFiles* extra = nullptr) {
  MemoryFiles local;
  MemoryFiles& fs = extra ? *extra : local;
  fs.Add("/etc/dovecot/dovecot.conf", text);
  Config cfg = MustParse(fs);
  AuditResult r = Audit(cfg, fs, {});
  std::vector<std::string> ids;
  for (const auto& f : r.findings) ids.push_back(f.id);
  std::sort(ids.begin(), ids.end());
  return ids;
}

using Ids_t = std::vector<std::string>;

TEST(DovecotParse, ValuesCommentsQuotesContinuations) {
  MemoryFiles fs;
  fs.Add("/etc/dovecot/dovecot.conf",
         "# comment\n"
         "auth_mechanisms = plain login # trailing\n"
         "auth_debug=yes\n"
         "auth_debug = no\n"
         "login_greeting = \"Hello # not a comment\"\n"
         "mail_plugins = quota\n"
         "mail_plugins = $mail_plugins acl\n"
         "login_trusted_networks = 10.0.0.0/8 \\\n"
         "   192.168.0.0/16\n"
         "ssl_key = <key.pem\n");
  Config c = MustParse(fs);
  EXPECT_EQ(c.Global("auth_mechanisms")->value, "plain login");
  EXPECT_EQ(c.Global("auth_debug")->value, "no");
  EXPECT_EQ(c.Global("auth_debug")->line, 4);
  EXPECT_EQ(c.Global("login_greeting")->value, "Hello # not a comment");
  EXPECT_EQ(c.Global("mail_plugins")->value, "quota acl");
  EXPECT_EQ(c.Global("login_trusted_networks")->value, "10.0.0.0/8 192.168.0.0/16");
  EXPECT_EQ(c.Global("ssl_key")->value, "<key.pem");
  EXPECT_EQ(c.Global("ssl_key")->line, 10);  // continuation lines still count
}

TEST(DovecotParse, SectionsScopeSettings) {
  MemoryFiles fs;
  fs.Add("/etc/dovecot/dovecot.conf",
         "protocol imap {\n  mail_debug = yes\n}\n"
         "service imap-login {\n  inet_listener imap {\n    port = 0\n  }\n}\n"
         "remote 127.0.0.1 {\n  disable_plaintext_auth = no\n}\n");
  Config c = MustParse(fs);
  EXPECT_EQ(c.Global("mail_debug"), nullptr);
  EXPECT_EQ(c.Global("port"), nullptr);
  ASSERT_EQ(c.settings.size(), 3u);
  auto scope = c.ScopeOf(c.settings[1]);
  ASSERT_EQ(scope.size(), 2u);
  EXPECT_EQ(scope[0]->type, "service");
  EXPECT_EQ(scope[0]->name, "imap-login");
  EXPECT_EQ(scope[1]->type, "inet_listener");
  EXPECT_EQ(scope[1]->name, "imap");
}

TEST(DovecotParse, IncludesRelativeGlobAndTry) {
  MemoryFiles fs;
  fs.Add("/etc/dovecot/dovecot.conf", "auth_debug = yes\n!include conf.d/*.conf\n!include_try local.conf\n!include_try missing/*.conf\n");
  fs.Add("/etc/dovecot/conf.d/10-auth.conf", "auth_debug = no\n");
  fs.Add("/etc/dovecot/conf.d/20-imap.conf", "auth_mechanisms = plain\n");
  Config c = MustParse(fs);
  EXPECT_EQ(c.Global("auth_debug")->value, "no");
  EXPECT_EQ(c.Global("auth_debug")->file, "/etc/dovecot/conf.d/10-auth.conf");
  EXPECT_EQ(c.files.size(), 3u);  // local.conf missing: fine for !include_try
}

TEST(DovecotParse, Errors) {
  // A section never closed: Dovecot accepts it, so does mailward, with a warning.
  MemoryFiles a;
  a.Add("/etc/dovecot/dovecot.conf", "protocol imap {\n  mail_debug = yes\n");
  Config ca = MustParse(a);
  ASSERT_EQ(ca.warnings.size(), 1u);
  EXPECT_HAS(ca.warnings[0], "/etc/dovecot/dovecot.conf:1: section 'protocol imap' is never closed");
  MemoryFiles b;
  b.Add("/etc/dovecot/dovecot.conf", "auth_debug = yes\n}\n");
  EXPECT_HAS(ParseError(b), "dovecot.conf:2: '}' without an open section");
  MemoryFiles c;
  c.Add("/etc/dovecot/dovecot.conf", "!include a.conf\n");
  c.Add("/etc/dovecot/a.conf", "!include ./b.conf\n");
  c.Add("/etc/dovecot/b.conf", "!include ../dovecot/dovecot.conf\n");
  EXPECT_HAS(ParseError(c), "b.conf:1: Recursive include file");
  MemoryFiles d;
  d.Add("/etc/dovecot/dovecot.conf", "\n!include nothere.conf\n");
  EXPECT_HAS(ParseError(d), "dovecot.conf:2: /etc/dovecot/nothere.conf: cannot open");
  MemoryFiles e;
  e.Add("/etc/dovecot/dovecot.conf", std::string("auth_debug = yes\n\x7f" "ELF\x01\x00\x00", 24));
  EXPECT_HAS(ParseError(e), "binary data");
  MemoryFiles f;
  f.Add("/etc/dovecot/dovecot.conf", "just some words\n");
  EXPECT_HAS(ParseError(f), "dovecot.conf:1: expected 'key = value'");
  MemoryFiles g;
  g.Add("/etc/dovecot/dovecot.conf", "!include_try conf.d/*.conf\n");
  g.Add("/etc/dovecot/conf.d/x.conf", "passdb {\n");
  EXPECT_HAS(MustParse(g).warnings.at(0), "conf.d/x.conf:1: section 'passdb' is never closed");
  MemoryFiles h;
  EXPECT_HAS(ParseError(h), "cannot open");
}

TEST(DovecotParse, AGlobOfAThousandSiblingsIsNotNesting) {
  MemoryFiles fs;
  fs.Add("/etc/dovecot/dovecot.conf", "!include conf.d/*.conf\nlast = yes\n");
  for (int i = 0; i < 1000; ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "/etc/dovecot/conf.d/%04d.conf", i);
    fs.Add(name, "n = " + std::to_string(i) + "\n");
  }
  Config c = MustParse(fs);
  EXPECT_EQ(c.files.size(), 1001u);
  EXPECT_EQ(c.Global("n")->value, "999");  // read in name order
  EXPECT_EQ(c.settings.front().value, "0");
  EXPECT_EQ(c.Global("last")->value, "yes");
  // Nesting is still limited.
  MemoryFiles deep;
  deep.Add("/etc/dovecot/dovecot.conf", "!include d0.conf\n");
  for (int i = 0; i < 40; ++i)
    deep.Add("/etc/dovecot/d" + std::to_string(i) + ".conf", "!include d" + std::to_string(i + 1) + ".conf\n");
  EXPECT_HAS(ParseError(deep), "includes nested deeper than 32 files");
  // A glob inside an included file, and !include_try globs, still work.
  MemoryFiles g;
  g.Add("/etc/dovecot/dovecot.conf", "!include_try a/*.conf\n");
  for (int i = 0; i < 40; ++i) g.Add("/etc/dovecot/a/" + std::to_string(100 + i) + ".conf", "!include /etc/dovecot/b/*.conf\n");
  g.Add("/etc/dovecot/b/x.conf", "x = 1\n");
  EXPECT_EQ(MustParse(g).files.size(), 81u);
}

TEST(DovecotParse, SelfDoublingExpansionIsBounded) {
  MemoryFiles fs;
  std::string text = "x = aaaaaaaaaaaaaaaa\n";
  // `$x` expands where it is a word of its own (Dovecot's config_write_keyvariable): 16 bytes,
  // doubled plus a blank per line, pass 1 MiB on line 17.
  for (int i = 0; i < 40; ++i) text += "x = $x $x\n";
  fs.Add("/etc/dovecot/dovecot.conf", text);
  auto start = std::chrono::steady_clock::now();
  std::string e = ParseError(fs);
  EXPECT_HAS(e, "dovecot.conf:17: the value of 'x' grows beyond 1 MiB by $setting expansion");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 10.0);
  // Ordinary growth is fine.
  MemoryFiles ok;
  ok.Add("/etc/dovecot/dovecot.conf", "mail_plugins = quota\nmail_plugins = $mail_plugins acl\nmail_plugins = $mail_plugins zlib\n");
  EXPECT_EQ(MustParse(ok).Global("mail_plugins")->value, "quota acl zlib");
}

TEST(DovecotParse, ErrorsQuoteNothingOfAFileOthersCannotRead) {
  MemoryFiles fs;
  fs.Add("/etc/dovecot/dovecot.conf", "auth_debug = no\n!include /etc/shadow\n");
  fs.Add("/etc/shadow", "root:$y$j9T$SECRETHASH:19000:0:99999:7:::\n", 0640);
  std::string e = ParseError(fs);
  EXPECT_EQ(e.find("SECRET"), std::string::npos) << e;
  EXPECT_EQ(e.find("root:"), std::string::npos) << e;
  EXPECT_HAS(e, "/etc/shadow:1: expected 'key = value', a section or '}': (content not shown: /etc/shadow is not readable by others)");
  for (const char* line : {"!bogus SECRET\n", "SECRET\n", "SECRET! = 1\n", "SECRET! {\n}\n"}) {
    MemoryFiles p;
    p.Add("/etc/dovecot/dovecot.conf", "!include secret.conf.ext\n");
    p.Add("/etc/dovecot/secret.conf.ext", line, 0600);
    std::string m = ParseError(p);
    EXPECT_EQ(m.find("SECRET"), std::string::npos) << m;
    EXPECT_HAS(m, "content not shown");
  }
  // A readable file is quoted, but only a short escaped excerpt.
  MemoryFiles big;
  big.Add("/etc/dovecot/dovecot.conf", std::string(1u << 20, 'w') + "\x1b[2J\n");
  std::string m = ParseError(big);
  EXPECT_LT(m.size(), 300u);
  EXPECT_HAS(m, "'" + std::string(80, 'w') + "...'");
}

TEST(DovecotParse, PrivateTextStaysHiddenAcrossContinuationsIncludesAndWarnings) {
  // A private file's last line continued into the readable file that included it.
  MemoryFiles cont;
  cont.Add("/etc/dovecot/dovecot.conf", "!include secret.conf.ext\nrest\n");
  cont.Add("/etc/dovecot/secret.conf.ext", "SECRET_A \\\n", 0600);
  std::string e = ParseError(cont);
  EXPECT_EQ(e.find("SECRET"), std::string::npos) << e;
  EXPECT_HAS(e, "(content not shown: /etc/dovecot/secret.conf.ext is not readable by others)");
  // An include named in a private file that does not exist.
  MemoryFiles inc;
  inc.Add("/etc/dovecot/dovecot.conf", "!include secret.conf.ext\n");
  inc.Add("/etc/dovecot/secret.conf.ext", "!include SECRET_B.conf\n", 0600);
  e = ParseError(inc);
  EXPECT_EQ(e.find("SECRET"), std::string::npos) << e;
  EXPECT_HAS(e, "content not shown");
  // A section a private file never closes: the warning names the place, not the text.
  MemoryFiles open;
  open.Add("/etc/dovecot/dovecot.conf", "!include secret.conf.ext\n");
  open.Add("/etc/dovecot/secret.conf.ext", "plugin SECRET_C {\n", 0600);
  Config c = MustParse(open);
  ASSERT_EQ(c.warnings.size(), 1u);
  EXPECT_EQ(c.warnings[0].find("SECRET"), std::string::npos) << c.warnings[0];
  EXPECT_HAS(c.warnings[0], "/etc/dovecot/secret.conf.ext:1: section (content not shown");
  // Matches of one glob are open together, as on Dovecot's input stack, though read one by one.
  MemoryFiles sib;
  sib.Add("/etc/dovecot/dovecot.conf", "!include conf.d/*.conf\n");
  sib.Add("/etc/dovecot/conf.d/a.conf", "!include b.conf\n");
  sib.Add("/etc/dovecot/conf.d/b.conf", "x = 1\n");
  EXPECT_HAS(ParseError(sib), "conf.d/a.conf:1: Recursive include file: /etc/dovecot/conf.d/b.conf");
}

TEST(DovecotParse, AFifoIncludeIsRefusedAtOnce) {
  char tmpl[] = "/tmp/mwdovecotXXXXXX";
  std::string dir = mkdtemp(tmpl);
  std::ofstream(dir + "/dovecot.conf") << "!include fifo.conf\n";
  ASSERT_EQ(mkfifo((dir + "/fifo.conf").c_str(), 0644), 0);
  auto disk = MakeDiskFileSource();
  auto fut = std::async(std::launch::async, [&] { return Parse(dir + "/dovecot.conf", *disk); });
  bool ready = fut.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  if (!ready) {  // unblock the reader before failing
    int fd = open((dir + "/fifo.conf").c_str(), O_WRONLY);
    close(fd);
  }
  auto r = fut.get();
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(ready) << "Parse blocked on a FIFO";
  ASSERT_FALSE(r.ok());
  EXPECT_HAS(r.status().message(), "not a regular file");
}

TEST(DovecotParse, DeepNestingIsFastAndSafe) {
  MemoryFiles fs;
  std::string deep;
  for (int i = 0; i < 20000; ++i) deep += "plugin {\n  x = " + std::to_string(i) + "\n";
  for (int i = 0; i < 20000; ++i) deep += "}\n";
  fs.Add("/etc/dovecot/dovecot.conf", deep);
  auto start = std::chrono::steady_clock::now();
  Config c = MustParse(fs);
  EXPECT_EQ(c.settings.size(), 20000u);
  EXPECT_EQ(c.ScopeOf(c.settings.back()).size(), 20000u);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 10.0);
  std::string unclosed(20000, '{');
  MemoryFiles u;
  u.Add("/etc/dovecot/dovecot.conf", "a " + unclosed + "\n");
  EXPECT_FALSE(Parse("/etc/dovecot/dovecot.conf", u).ok());
}

TEST(DovecotParse, Detects24) {
  MemoryFiles fs;
  fs.Add("/etc/dovecot/dovecot.conf", "dovecot_config_version = 2.4.0\ndovecot_storage_version = 2.4.0\n");
  EXPECT_TRUE(MustParse(fs).is_24);
}

TEST(DovecotAudit, SaneConfigIsClean) {
  EXPECT_EQ(Ids("protocols = imap pop3\nssl = required\nssl_cert = </c.pem\nssl_key = </k.pem\n"
                "# auth_debug = yes\n#disable_plaintext_auth = no\n"),
            Ids_t{});
}

TEST(DovecotAudit, LoggingFindings) {
  EXPECT_EQ(Ids("auth_debug = yes\n"), Ids_t{"auth-debug"});
  EXPECT_EQ(Ids("auth_debug_passwords = yes\n"), Ids_t{"auth-debug-passwords"});
  EXPECT_EQ(Ids("auth_verbose_passwords = plain\n"), Ids_t{"auth-verbose-passwords"});
  EXPECT_EQ(Ids("mail_debug = yes\n"), Ids_t{"mail-debug"});
  EXPECT_EQ(Ids("protocols = imap\nprotocol imap {\n mail_debug = yes\n}\n"), Ids_t{"mail-debug"});
  // Only enabled protocols are evaluated.
  EXPECT_EQ(Ids("protocols = pop3\nprotocol imap {\n mail_debug = yes\n}\n"), Ids_t{});
  // Overridden later: not a finding.
  EXPECT_EQ(Ids("auth_debug = yes\nauth_debug = no\n"), Ids_t{});
}

TEST(DovecotAudit, VerbosePasswordsPlainIsWorseThanSha1) {
  MemoryFiles fs;
  fs.Add("/etc/dovecot/dovecot.conf", "auth_verbose_passwords = sha1:6\n");
  auto sha = Audit(MustParse(fs), fs, {});
  ASSERT_EQ(sha.findings.size(), 1u);
  EXPECT_EQ(sha.findings[0].severity, "medium");
  MemoryFiles fs2;
  fs2.Add("/etc/dovecot/dovecot.conf", "auth_verbose_passwords = plain\n");
  auto plain = Audit(MustParse(fs2), fs2, {});
  ASSERT_EQ(plain.findings.size(), 1u);
  EXPECT_EQ(plain.findings[0].severity, "critical");
  EXPECT_EQ(plain.findings[0].file, "/etc/dovecot/dovecot.conf");
  EXPECT_EQ(plain.findings[0].line, 1);
  EXPECT_EQ(*plain.findings[0].setting, "auth_verbose_passwords");
  EXPECT_EQ(plain.findings[0].value, "plain");
}

TEST(DovecotAudit, AnonymousOnlyWithTheMechanism) {
  EXPECT_EQ(Ids("auth_anonymous_username = guest\n"), Ids_t{});
  EXPECT_EQ(Ids("auth_mechanisms = plain ANONYMOUS\n"), Ids_t{"anonymous-login"});
}

TEST(DovecotAudit, CleartextAuth) {
  // 143 and 110 are listening by default, so both listeners are findings too.
  EXPECT_EQ(Ids("disable_plaintext_auth = no\n"), Ids_t{"cleartext-auth"});  // no protocols enabled
  EXPECT_EQ(Ids("protocols = imap pop3\ndisable_plaintext_auth = no\n"),
            (Ids_t{"cleartext-auth", "plaintext-listener", "plaintext-listener"}));
  // ssl = required refuses cleartext auth whatever disable_plaintext_auth says.
  EXPECT_EQ(Ids("disable_plaintext_auth = no\nssl = required\n"), Ids_t{});
  // Scoped to loopback: fine. Scoped to a network: a finding at the block's line.
  EXPECT_EQ(Ids("remote 127.0.0.1 {\n  disable_plaintext_auth = no\n}\n"), Ids_t{});
  EXPECT_EQ(Ids("remote ::1 {\n  disable_plaintext_auth = no\n}\n"), Ids_t{});
  EXPECT_EQ(Ids("remote 10.0.0.0/8 {\n  disable_plaintext_auth = no\n}\n"), Ids_t{"cleartext-auth"});
  EXPECT_EQ(Ids("protocols = lmtp imap\nprotocol imap {\n  disable_plaintext_auth = no\n}\n"),
            (Ids_t{"cleartext-auth", "plaintext-listener"}));
  // Listener closed with port = 0, pop3 not enabled: only the setting itself.
  EXPECT_EQ(Ids("protocols = imap\ndisable_plaintext_auth = no\n"
                "service imap-login {\n  inet_listener imap {\n    port = 0\n  }\n}\n"),
            Ids_t{"cleartext-auth"});
}

TEST(DovecotAudit, Tls) {
  EXPECT_EQ(Ids("ssl = no\n"), Ids_t{"ssl-disabled"});
  EXPECT_EQ(Ids("ssl_min_protocol = TLSv1\n"), Ids_t{"weak-tls-protocol"});
  EXPECT_EQ(Ids("ssl_min_protocol = TLSv1.1\n"), Ids_t{"weak-tls-protocol"});
  EXPECT_EQ(Ids("ssl_min_protocol = TLSv1.3\n"), Ids_t{});
}

TEST(DovecotAudit, Dovecot24Names) {
  const char* head = "dovecot_config_version = 2.4.0\ndovecot_storage_version = 2.4.0\nprotocols = imaps\n";
  EXPECT_EQ(Ids(std::string(head)), Ids_t{});
  EXPECT_EQ(Ids(std::string(head) + "auth_allow_cleartext = yes\n"), Ids_t{"cleartext-auth"});
  EXPECT_EQ(Ids(std::string(head) + "disable_plaintext_auth = no\n"), Ids_t{});  // a 2.3 name means nothing in 2.4
  EXPECT_EQ(Ids(std::string(head) + "log_debug = category=auth\n"), Ids_t{"auth-debug"});
  EXPECT_EQ(Ids(std::string(head) + "auth_allow_weak_schemes = yes\n"), Ids_t{"weak-password-schemes"});
}

TEST(DovecotAudit, TrustedNetworks) {
  EXPECT_EQ(Ids("login_trusted_networks = 0.0.0.0/0\n"), Ids_t{"trusted-networks-broad"});
  EXPECT_EQ(Ids("login_trusted_networks = 192.0.2.10 198.51.100.0/24\n"), Ids_t{});
}

TEST(DovecotAudit, FilePermissions) {
  MemoryFiles fs;
  fs.Add("/etc/dovecot/conf.d/ssl.conf", "ssl_key = </etc/dovecot/private/key.pem\n", 0666);
  fs.Add("/etc/dovecot/private/key.pem", "KEY", 0644);
  EXPECT_EQ(Ids("!include conf.d/ssl.conf\n", &fs), (Ids_t{"config-writable", "ssl-key-exposed"}));
  MemoryFiles ok;
  ok.Add("/etc/dovecot/private/key.pem", "KEY", 0600);
  EXPECT_EQ(Ids("ssl_key = </etc/dovecot/private/key.pem\n", &ok), Ids_t{});
  MemoryFiles owned;
  owned.Add("/etc/dovecot/conf.d/x.conf", "", 0644, 1000);
  EXPECT_EQ(Ids("!include conf.d/x.conf\n", &owned), Ids_t{"config-writable"});
}

TEST(DovecotAudit, FindingsHaveNullSettingForFiles) {
  MemoryFiles fs;
  fs.Add("/etc/dovecot/dovecot.conf", "ssl_key = <k.pem\n", 0602);
  fs.Add("/etc/dovecot/k.pem", "KEY", 0604);
  AuditResult r = Audit(MustParse(fs), fs, {});
  ASSERT_EQ(r.findings.size(), 2u);
  EXPECT_EQ(r.findings[0].id, "ssl-key-exposed");  // critical sorts first
  EXPECT_FALSE(r.findings[0].setting.has_value());
  EXPECT_EQ(r.findings[0].file, "/etc/dovecot/k.pem");
}

TEST(DovecotAudit, IgnoreList) {
  MemoryFiles fs;
  fs.Add("/etc/dovecot/dovecot.conf", "auth_debug = yes\nmail_debug = yes\n");
  AuditResult r = Audit(MustParse(fs), fs, {"auth-debug"});
  ASSERT_EQ(r.findings.size(), 1u);
  EXPECT_EQ(r.findings[0].id, "mail-debug");
  EXPECT_EQ(r.ignored, std::vector<std::string>{"auth-debug"});
}


// ---- Agreement with doveconf 2.3.19 (each case was a disagreement found by test_dovecot_diff.py) ----

TEST(DovecotDoveconf, BraceGlobIncludeAndSectionAcrossFiles) {
  MemoryFiles fs;
  fs.Add("/etc/dovecot/dovecot.conf", "!include d/{b,a}.conf\n");
  fs.Add("/etc/dovecot/d/b.conf", "protocol imap {\n  mail_debug = yes\n");
  fs.Add("/etc/dovecot/d/a.conf", "  ssl = no\n}\nauth_debug = yes\n");
  Config c = MustParse(fs);
  // GLOB_BRACE keeps the alternatives' order: b before a.
  EXPECT_EQ(c.files, (std::vector<std::string>{"/etc/dovecot/dovecot.conf", "/etc/dovecot/d/b.conf", "/etc/dovecot/d/a.conf"}));
  EXPECT_EQ(c.Global("ssl"), nullptr);  // inside protocol imap, closed in a.conf
  EXPECT_EQ(c.Lookup("ssl", Context{"imap", {}, {}, ""})->value, "no");
  EXPECT_EQ(c.Global("auth_debug")->value, "yes");
  EXPECT_TRUE(c.warnings.empty());
}

TEST(DovecotDoveconf, ValueEndingInBraceIsAValue) {
  MemoryFiles fs;
  fs.Add("/etc/dovecot/dovecot.conf", "login_greeting = hello {\nauth_debug = yes\n");
  Config c = MustParse(fs);
  EXPECT_EQ(c.Global("login_greeting")->value, "hello {");
  EXPECT_TRUE(c.sections.empty());
}

TEST(DovecotDoveconf, CommentsNeverContinue) {
  MemoryFiles fs;
  fs.Add("/etc/dovecot/dovecot.conf",
         "# was: auth_verbose_passwords = sha1 \\\nauth_verbose_passwords = plain\n"
         "auth_mechanisms = login \\\n# a comment line drops the continued line\nmail_debug = yes\n");
  Config c = MustParse(fs);
  EXPECT_EQ(c.Global("auth_verbose_passwords")->value, "plain");
  EXPECT_EQ(c.Global("auth_mechanisms"), nullptr);  // dropped, as doveconf does
  EXPECT_EQ(c.Global("mail_debug")->value, "yes");
  AuditResult r = Audit(c, fs, {});
  ASSERT_FALSE(r.findings.empty());
  EXPECT_EQ(r.findings[0].id, "auth-verbose-passwords");
  EXPECT_EQ(r.findings[0].severity, "critical");
}

TEST(DovecotDoveconf, ContinuationJoinsWithOneBlank) {
  MemoryFiles fs;
  fs.Add("/etc/dovecot/dovecot.conf",
         "auth_mechanisms = plain\\\nanonymous\nprotocols = imap   \\\n \\\n\t  pop3\n");
  Config c = MustParse(fs);
  EXPECT_EQ(c.Global("auth_mechanisms")->value, "plain anonymous");
  EXPECT_EQ(c.Global("protocols")->value, "imap pop3");
}

TEST(DovecotDoveconf, OwnKeyReferencesOnly) {
  MemoryFiles fs;
  fs.Add("/etc/dovecot/dovecot.conf",
         "auth_mechanisms = $auth_mechanisms  login\n"        // the default, then one blank
         "auth_anonymous_username = anon $ssl $auth_mechanisms\n"  // other keys: as written
         "login_greeting = $login_greeting$login_greeting\n"  // not a whole token: as written
         "protocol imap {\n  auth_mechanisms = $auth_mechanisms cram-md5\n}\n"
         "mail_debug = y\nmail_debug = $mail_debug\n");
  Config c = MustParse(fs);
  EXPECT_EQ(c.Global("auth_mechanisms")->value, "plain login");
  EXPECT_EQ(c.Global("auth_anonymous_username")->value, "anon $ssl $auth_mechanisms");
  EXPECT_EQ(c.Global("login_greeting")->value, "$login_greeting$login_greeting");
  EXPECT_EQ(c.Lookup("auth_mechanisms", Context{"imap", {}, {}, ""})->value, "plain login cram-md5");
  EXPECT_EQ(c.Global("mail_debug")->value, "yes");
}

TEST(DovecotDoveconf, SelfDoublingIsBounded) {
  MemoryFiles fs;
  std::string text;
  for (int i = 0; i < 40; ++i) text += "login_greeting = $login_greeting $login_greeting\n";
  fs.Add("/etc/dovecot/dovecot.conf", text);
  EXPECT_HAS(ParseError(fs), "grows beyond 1 MiB");
}

TEST(DovecotDoveconf, KeyFileWithBlankAndRuntimeValue) {
  MemoryFiles fs;
  fs.Add("/etc/dovecot/mech.txt", "plain anonymous");
  fs.Add("/etc/dovecot/dovecot.conf", "auth_mechanisms = < mech.txt\nssl_key = <  /k.pem\n");
  Config c = MustParse(fs);
  EXPECT_EQ(c.Global("auth_mechanisms")->value, "<mech.txt");  // as doveconf -h prints it
  EXPECT_EQ(c.Global("auth_mechanisms")->runtime, "plain anonymous");
  EXPECT_EQ(c.Global("ssl_key")->value, "</k.pem");
  EXPECT_EQ(Audit(c, fs, {}).findings.at(0).id, "anonymous-login");
}

TEST(DovecotDoveconf, BooleansAsDovecotReadsThem) {
  MemoryFiles fs;
  fs.Add("/etc/dovecot/dovecot.conf", "auth_debug = 1\nmail_debug = y\nauth_debug_passwords = Y\ndisable_plaintext_auth = NO\n");
  Config c = MustParse(fs);
  EXPECT_EQ(c.Global("auth_debug")->value, "yes");
  EXPECT_EQ(c.Global("mail_debug")->value, "yes");
  EXPECT_EQ(c.Global("auth_debug_passwords")->value, "yes");
  EXPECT_EQ(c.Global("disable_plaintext_auth")->value, "no");
  MemoryFiles bad;
  bad.Add("/etc/dovecot/dovecot.conf", "auth_debug = 0\n");  // doveconf: Invalid boolean value
  EXPECT_HAS(ParseError(bad), "Invalid boolean value: 0");
  MemoryFiles enum_case;  // ssl is an enum, compared exactly
  enum_case.Add("/etc/dovecot/dovecot.conf", "ssl = Yes\n");
  EXPECT_HAS(ParseError(enum_case), "Invalid value: Yes");
}

TEST(DovecotDoveconf, QuotedValueEndingInEscapedQuote) {
  MemoryFiles fs;
  fs.Add("/etc/dovecot/dovecot.conf", "auth_anonymous_username = \"guest\\\"\nlogin_greeting = \"a\" b\n");
  Config c = MustParse(fs);
  EXPECT_EQ(c.Global("auth_anonymous_username")->value, "guest");
  EXPECT_EQ(c.Global("login_greeting")->value, "\"a\" b");  // not quoted at both ends: as written
}

TEST(DovecotDoveconf, RemoteEverywhereIsGlobal) {
  MemoryFiles fs;
  fs.Add("/etc/dovecot/dovecot.conf", "remote 0.0.0.0/0 {\n  ssl = no\n}\nremote ::/0 {\n  mail_debug = yes\n}\n");
  Config c = MustParse(fs);
  EXPECT_EQ(c.Global("ssl")->value, "no");
  EXPECT_EQ(c.Global("mail_debug")->value, "yes");
  // A global assignment wins over them, wherever it is (doveconf: root filter first).
  MemoryFiles fs2;
  fs2.Add("/etc/dovecot/dovecot.conf", "remote 0.0.0.0/0 {\n  ssl = no\n}\nssl = required\n");
  EXPECT_EQ(MustParse(fs2).Global("ssl")->value, "required");
  EXPECT_EQ(Ids("remote 0.0.0.0/0 {\n  ssl = no\n}\n"), Ids_t{"ssl-disabled"});
}

TEST(DovecotDoveconf, AuthSettingsAreRefusedInRemoteBlocks) {
  MemoryFiles fs;
  fs.Add("/etc/dovecot/dovecot.conf", "remote 10.0.0.0/8 {\n  ssl = no\n  auth_debug = yes\n}\n");
  EXPECT_HAS(ParseError(fs), "dovecot.conf:3: Auth settings not supported inside local/remote blocks: auth_debug");
  MemoryFiles ok;  // in a protocol block they are fine
  ok.Add("/etc/dovecot/dovecot.conf", "protocol imap {\n  auth_debug = yes\n}\n");
  MustParse(ok);
}

TEST(DovecotDoveconf, WideGlobIsNotDeepNesting) {
  MemoryFiles fs;
  fs.Add("/etc/dovecot/dovecot.conf", "!include conf.d/*.conf\n");
  for (int i = 0; i < 40; ++i) fs.Add("/etc/dovecot/conf.d/" + std::to_string(100 + i) + ".conf", "mail_debug = no\n");
  EXPECT_EQ(MustParse(fs).files.size(), 41u);
  MemoryFiles deep;
  for (int i = 0; i < 40; ++i)
    deep.Add("/etc/dovecot/" + std::to_string(i) + ".conf", "!include " + std::to_string(i + 1) + ".conf\n");
  deep.Add("/etc/dovecot/40.conf", "");
  deep.Add("/etc/dovecot/dovecot.conf", "!include 0.conf\n");
  EXPECT_HAS(ParseError(deep), "nested deeper than 32");
}

// ---- Findings in every filter context Dovecot evaluates ----

std::vector<std::pair<std::string, std::vector<std::string>>> IdsAndContexts(const std::string& text) {
  MemoryFiles fs;
  fs.Add("/etc/dovecot/dovecot.conf", text);
  std::vector<std::pair<std::string, std::vector<std::string>>> out;
  for (const auto& f : Audit(MustParse(fs), fs, {}).findings) out.push_back({f.id, f.contexts});
  std::sort(out.begin(), out.end());
  return out;
}
using IC = std::vector<std::pair<std::string, std::vector<std::string>>>;

TEST(DovecotContexts, Pop3SslYesUnderGlobalRequired) {
  EXPECT_EQ(IdsAndContexts("protocols = imap pop3\nssl = required\ndisable_plaintext_auth = no\n"
                           "protocol pop3 {\n  ssl = yes\n}\n"),
            (IC{{"cleartext-auth", {"protocol=pop3"}}, {"plaintext-listener", {"listener pop3-login/pop3"}}}));
}

TEST(DovecotContexts, ScopedTlsAndLogging) {
  EXPECT_EQ(IdsAndContexts("protocols = imap pop3\nprotocol imap {\n  ssl = no\n}\n"),
            (IC{{"ssl-disabled", {"protocol=imap"}}}));
  EXPECT_EQ(IdsAndContexts("protocols = pop3\nprotocol pop3 {\n  ssl_min_protocol = ANY\n}\n"
                           "remote 192.0.2.0/24 {\n  ssl_min_protocol = TLSv1.1\n}\n"),
            (IC{{"weak-tls-protocol", {"protocol=pop3"}},
                {"weak-tls-protocol", {"remote=192.0.2.0/24", "protocol=pop3 remote=192.0.2.0/24"}}}));
  EXPECT_EQ(IdsAndContexts("protocols = imap\nprotocol imap {\n  auth_debug = yes\n  auth_verbose_passwords = plain\n}\n"),
            (IC{{"auth-debug", {"protocol=imap"}}, {"auth-verbose-passwords", {"protocol=imap"}}}));
  // Loopback-only blocks: loopback counts as secured.
  EXPECT_EQ(IdsAndContexts("remote 127.0.0.0/8 {\n  ssl = no\n  disable_plaintext_auth = no\n}\n"), IC{});
  EXPECT_EQ(IdsAndContexts("local 127.0.0.1 {\n  disable_plaintext_auth = no\n}\n"), IC{});
  EXPECT_EQ(IdsAndContexts("local 192.0.2.1 {\n  disable_plaintext_auth = no\n}\n"),
            (IC{{"cleartext-auth", {"local=192.0.2.1"}}}));
}

TEST(DovecotContexts, ConflictingFiltersAreAWarning) {
  // doveconf -f protocol=pop3 -f remote=10.1.2.3: "Conflict in setting ssl".
  MemoryFiles fs;
  fs.Add("/etc/dovecot/dovecot.conf",
         "protocols = pop3\nprotocol pop3 {\n  ssl = yes\n}\nremote 10.0.0.0/8 {\n  ssl = required\n}\n");
  auto r = Audit(MustParse(fs), fs, {});
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_HAS(r.warnings[0], "protocol=pop3 remote=10.0.0.0/8: two filters that are not nested both set ssl");
}

TEST(DovecotContexts, MailDebugOnlyWhereItIsTheSetting) {
  EXPECT_EQ(IdsAndContexts("protocols = imap\nplugin {\n  mail_debug = yes\n}\n"), IC{});
  EXPECT_EQ(IdsAndContexts("protocols = imap\nprotocol imap {\n  mail_debug = yes\n  mail_debug = no\n}\n"), IC{});
}

TEST(DovecotContexts, TrustedNetworkWithHostBits) {
  MemoryFiles fs;
  fs.Add("/etc/dovecot/dovecot.conf", "login_trusted_networks = 192.0.2.7 10.1.2.3/8\n");
  auto r = Audit(MustParse(fs), fs, {});
  ASSERT_EQ(r.findings.size(), 1u);
  EXPECT_EQ(r.findings[0].id, "trusted-networks-broad");
  EXPECT_HAS(r.findings[0].message, "10.0.0.0/8");
}

TEST(DovecotContexts, ListenersByTheirOwnSsl) {
  const std::string head = "protocols = imap\ndisable_plaintext_auth = no\n";
  // Implicit TLS on 143 is not cleartext; the default imaps stays TLS.
  EXPECT_EQ(IdsAndContexts(head + "service imap-login {\n  inet_listener imap {\n    port = 143\n    ssl = yes\n  }\n}\n"),
            (IC{{"cleartext-auth", {"", "protocol=imap"}}}));
  // An extra cleartext listener is.
  EXPECT_EQ(IdsAndContexts(head + "service imap-login {\n  inet_listener imap {\n    port = 0\n  }\n"
                                  "  inet_listener extra {\n    port = 1143\n  }\n}\n"),
            (IC{{"cleartext-auth", {"", "protocol=imap"}}, {"plaintext-listener", {"listener imap-login/extra"}}}));
}


TEST(DovecotContexts, ManyRemoteBlocksAreBoundedAndFast) {
  MemoryFiles fs;
  std::string text = "protocols = imap pop3\n";
  for (int i = 0; i < 5000; ++i)
    text += "remote 10." + std::to_string(i / 250) + "." + std::to_string(i % 250) + ".0/24 {\n  ssl = no\n}\n";
  fs.Add("/etc/dovecot/dovecot.conf", text);
  auto start = std::chrono::steady_clock::now();
  auto r = Audit(MustParse(fs), fs, {});
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 10.0);
  EXPECT_EQ(r.contexts.size(), 255u);
  ASSERT_FALSE(r.warnings.empty());
  EXPECT_HAS(r.warnings.back(), "only the first ones were judged");
  EXPECT_FALSE(r.findings.empty());
}

}  // namespace
}  // namespace mw::dovecot
