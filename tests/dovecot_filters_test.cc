// Dovecot's filter blocks (protocol, local_name, local, remote) as doveconf -f reads them: which
// value a connection gets, which nestings Dovecot refuses, host names in remote blocks.
#include <gtest/gtest.h>

#include "dovecot/config.h"
#include "fakes/memory_files.h"

namespace mw::dovecot {
namespace {

using mw::testing::MemoryFiles;

#define EXPECT_HAS(hay, needle) EXPECT_NE((hay).find(needle), std::string::npos) << (hay)

/// Resolves mail.test as Dovecot's getaddrinfo would.
class Files : public MemoryFiles {
 public:
  std::optional<std::string> Resolve(const std::string& host) override {
    if (host == "mail.test") return "192.0.2.25";
    return MemoryFiles::Resolve(host);
  }
};

Result<Config> ParseText(const std::string& text) {
  Files fs;
  fs.Add("/etc/dovecot/dovecot.conf", text);
  return Parse("/etc/dovecot/dovecot.conf", fs);
}

Net N(const std::string& s) {
  Net n;
  EXPECT_TRUE(ParseNet(s, &n)) << s;
  return n;
}

std::string ValueFor(const Config& c, const std::string& key, const Context& ctx) {
  const Setting* s = c.Lookup(key, ctx);
  return s ? s->value : "(default)";
}

TEST(DovecotFilters, ProtocolNegationLocalNameAndAddresses) {
  auto c = ParseText(
      "ssl = yes\n"
      "protocol !imap {\n  ssl = required\n}\n"
      "local_name *.example.org {\n  ssl_cert = <wild.pem\n}\n"
      "local_name \"mail.example.net other.example.net\" {\n  ssl_cert = <net.pem\n}\n"
      "local 192.0.2.1 {\n  mail_debug = yes\n}\n"
      "remote mail.test/32 {\n  login_greeting = partner\n}\n");
  ASSERT_TRUE(c.ok()) << c.status().message();
  Context imap{"imap", std::nullopt, std::nullopt, ""};
  Context pop3{"pop3", std::nullopt, std::nullopt, ""};
  Context none;
  EXPECT_EQ(ValueFor(*c, "ssl", imap), "yes");
  EXPECT_EQ(ValueFor(*c, "ssl", pop3), "required");
  EXPECT_EQ(ValueFor(*c, "ssl", none), "yes");  // no protocol: a protocol filter never applies

  Context sub;
  sub.local_name = "imap.example.org";
  EXPECT_EQ(ValueFor(*c, "ssl_cert", sub), "<wild.pem");
  sub.local_name = "example.org";  // the wildcard needs a label before it
  EXPECT_EQ(ValueFor(*c, "ssl_cert", sub), "(default)");
  sub.local_name = "other.example.net";
  EXPECT_EQ(ValueFor(*c, "ssl_cert", sub), "<net.pem");
  EXPECT_EQ(ValueFor(*c, "ssl_cert", none), "(default)");

  Context local;
  local.local = N("192.0.2.1");
  EXPECT_EQ(ValueFor(*c, "mail_debug", local), "yes");
  local.local = N("192.0.2.2");
  EXPECT_EQ(ValueFor(*c, "mail_debug", local), "(default)");

  Context partner;
  partner.remote = N("192.0.2.25");
  EXPECT_EQ(ValueFor(*c, "login_greeting", partner), "partner");
  partner.remote = N("192.0.2.26");
  EXPECT_EQ(ValueFor(*c, "login_greeting", partner), "(default)");

  // How the filters print (doveconf -f): the one of a remote block keeps its text as written.
  std::vector<std::string> texts;
  for (const auto& f : c->filters) texts.push_back(f.Text());
  EXPECT_EQ(texts, (std::vector<std::string>{"", "protocol=!imap", "local_name=*.example.org",
                                             "local_name=mail.example.net other.example.net", "local=192.0.2.1",
                                             "remote=mail.test/32"}));
  Context all{"pop3", N("10.0.0.0/8"), N("192.0.2.1"), "mail.example.net"};
  EXPECT_EQ(all.Text(), "protocol=pop3 remote=10.0.0.0/8 local=192.0.2.1 lname=mail.example.net");
}

TEST(DovecotFilters, NestingsDovecotRefuses) {
  EXPECT_HAS(ParseText("protocol imap {\n  protocol pop3 {\n  }\n}\n").status().message(),
             "dovecot.conf:2: Nested protocol { protocol { .. } } block not allowed");
  EXPECT_HAS(ParseText("remote 10.0.0.0/8 {\n  local_name mail.test {\n  }\n}\n").status().message(),
             "remote { local_name { .. } } not allowed (use local_name { remote { .. } } instead)");
  EXPECT_HAS(ParseText("protocol imap {\n  local_name mail.test {\n  }\n}\n").status().message(),
             "protocol { local_name { .. } } not allowed (use local_name { protocol { .. } } instead)");
  EXPECT_HAS(ParseText("remote nowhere.invalid {\n  ssl = no\n}\n").status().message(),
             "dovecot.conf:1: remote 'nowhere.invalid': not an address, a network or a host name that resolves");
  // Allowed the other way round.
  auto ok = ParseText("local_name mail.test {\n  remote 10.0.0.0/8 {\n    protocol imap {\n      ssl = required\n    }\n  }\n}\n");
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  Context ctx{"imap", N("10.1.2.3"), std::nullopt, "mail.test"};
  EXPECT_EQ(ValueFor(*ok, "ssl", ctx), "required");
  ctx.remote = N("192.0.2.1");
  EXPECT_EQ(ValueFor(*ok, "ssl", ctx), "(default)");
}

TEST(DovecotFilters, NetworksAsDovecotParsesThem) {
  Net n;
  EXPECT_TRUE(ParseNet("10.1.2.3/8", &n));  // host bits below the prefix are allowed
  EXPECT_EQ(n.bits, 8);
  EXPECT_TRUE(NetContains(n, N("10.200.0.1").cidr));
  EXPECT_FALSE(NetContains(n, N("11.0.0.1").cidr));
  EXPECT_TRUE(ParseNet("2001:db8::/32", &n));
  EXPECT_TRUE(NetContains(n, N("2001:db8:1::1").cidr));
  EXPECT_FALSE(NetContains(n, N("10.0.0.1").cidr));  // another family
  EXPECT_TRUE(ParseNet("::/0", &n));
  EXPECT_EQ(n.bits, 0);
  EXPECT_FALSE(ParseNet("10.0.0.0/33", &n));
  EXPECT_FALSE(ParseNet("10.0.0.0/x", &n));
  EXPECT_FALSE(ParseNet("mail", &n));
}

TEST(DovecotFilters, IncludeTryOfAMissingFileAndQuotedIncludes) {
  auto c = ParseText("!include_try \"/etc/dovecot/local.conf\"\nauth_debug = yes\n");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->Global("auth_debug")->value, "yes");
  EXPECT_HAS(ParseText("!include conf.d/*.conf\n").status().message(), "dovecot.conf:1: !include /etc/dovecot/conf.d/*.conf: no matching files");
}

}  // namespace
}  // namespace mw::dovecot
