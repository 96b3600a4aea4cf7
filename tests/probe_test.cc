#include <gtest/gtest.h>

#include "cli/probe_cmd.h"
#include "probe/probe.h"

namespace mw {
namespace {

Policy TestPolicy() {
  auto p = ParsePolicyText("version: 1\nallowlists:\n  office: [198.51.100.3, 203.0.113.128/25]\n"
                           "ports:\n  imap: {state: closed, allow: [office]}\n  imaps: {state: open}\n");
  EXPECT_TRUE(p.ok()) << p.status().message();
  return *p;
}

probe::Result R(uint16_t port, const char* state) {
  probe::Result r;
  r.host = "192.0.2.10";  // TEST-NET: never one of this host's addresses
  r.port = port;
  r.proto = probe::ProtoForPort(port);
  r.state = state;
  if (std::string(state) == "open") r.greeting = "* OK ready";
  return r;
}

TEST(Probe, ImapCapabilityLine) {
  EXPECT_EQ(probe::ParseImapCapabilityLine("* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED AUTH=PLAIN"),
            (std::vector<std::string>{"IMAP4rev1", "STARTTLS", "LOGINDISABLED", "AUTH=PLAIN"}));
  EXPECT_TRUE(probe::ParseImapCapabilityLine("*").empty());
}

TEST(Probe, ProtocolsByPort) {
  EXPECT_EQ(probe::ProtoForPort(143), probe::Proto::kImap);
  EXPECT_EQ(probe::ProtoForPort(995), probe::Proto::kPop3s);
  EXPECT_EQ(probe::ProtoForPort(587), probe::Proto::kSmtp);
  EXPECT_EQ(probe::ProtoForPort(2000), probe::Proto::kTcp);
}

TEST(Probe, JudgedAgainstThePolicy) {
  Policy p = TestPolicy();
  auto j = JudgeProbes(p, {R(143, "filtered"), R(993, "open"), R(143, "open"), R(993, "closed")}, "");
  EXPECT_EQ(j[0].as_policy, true);
  EXPECT_EQ(j[1].as_policy, true);
  EXPECT_EQ(j[2].as_policy, false);  // closed port answers
  EXPECT_EQ(j[3].as_policy, false);  // open port refused
  // From an allowlisted source the closed port is expected open.
  auto a = JudgeProbes(p, {R(143, "open")}, "203.0.113.200");
  EXPECT_EQ(a[0].expected, "open");
  EXPECT_EQ(a[0].as_policy, true);
  auto b = JudgeProbes(p, {R(143, "open")}, "203.0.113.1");
  EXPECT_EQ(b[0].expected, "closed");
}

TEST(Probe, CleartextLoginIsNotAsPolicy) {
  Policy p = TestPolicy();
  probe::Result r = R(993, "open");
  r.port = 993;
  r.proto = probe::Proto::kImap;  // pretend a plaintext IMAP service on an open port
  r.cleartext_login = true;
  auto j = JudgeProbes(p, {r}, "");
  EXPECT_EQ(j[0].as_policy, false);
  EXPECT_NE(j[0].reason.find("cleartext"), std::string::npos);
}

TEST(Probe, LocalProbeCannotJudgeAClosedPort) {
  Policy p = TestPolicy();
  probe::Result r = R(143, "open");
  r.host = "127.0.0.1";
  auto j = JudgeProbes(p, {r}, "");
  EXPECT_FALSE(j[0].as_policy.has_value());
  EXPECT_NE(j[0].reason.find("loopback"), std::string::npos);
}


probe::Result WithTls(uint16_t port, long days_left, const char* version) {
  probe::Result r = R(port, "open");
  r.tls = probe::TlsInfo{version, "TLS_AES_256_GCM_SHA384", "/CN=mail.test", "2026-11-25T13:00:00Z", days_left};
  return r;
}

TEST(Probe, ExpiredCertificateIsNeverAsPolicy) {
  Policy p = TestPolicy();  // no tls block: only an expired certificate is wrong
  auto j = JudgeProbes(p, {WithTls(993, -1, "TLSv1.3"), WithTls(993, 0, "TLSv1.3"), WithTls(993, 3, "TLSv1")}, "");
  EXPECT_EQ(j[0].as_policy, false);
  EXPECT_NE(j[0].reason.find("expired 1 day(s) ago"), std::string::npos) << j[0].reason;
  EXPECT_EQ(j[1].as_policy, true);
  EXPECT_EQ(j[2].as_policy, true);
}

TEST(Probe, TlsPolicyGlobalAndPerPort) {
  auto p = ParsePolicyText(
      "version: 1\ntls: {min_days_left: 14, min_version: TLSv1.2}\nports:\n  imaps: {state: open}\n"
      "  pop3s: {state: open, tls: {min_days_left: 2}}\n  submissions: {state: open, tls: {min_version: TLSv1.3}}\n");
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(p->TlsFor(nullptr).min_days_left, 14);
  auto j = JudgeProbes(*p, {WithTls(993, 10, "TLSv1.3"), WithTls(995, 10, "TLSv1.3"), WithTls(995, 10, "TLSv1.1"),
                            WithTls(465, 30, "TLSv1.2"), WithTls(465, 30, "TLSv1.3")},
                       "");
  EXPECT_EQ(j[0].as_policy, false);  // 10 < 14
  EXPECT_NE(j[0].reason.find("min_days_left: 14"), std::string::npos) << j[0].reason;
  EXPECT_EQ(j[1].as_policy, true);   // the port's 2 days
  EXPECT_EQ(j[2].as_policy, false);  // the global TLSv1.2 floor still holds there
  EXPECT_NE(j[2].reason.find("min_version: TLSv1.2"), std::string::npos) << j[2].reason;
  EXPECT_EQ(j[3].as_policy, false);  // the port asks for TLSv1.3
  EXPECT_EQ(j[4].as_policy, true);
}

TEST(Probe, TlsPolicyErrors) {
  auto bad = ParsePolicyText("version: 1\ntls: {min_days_left: -3}\nports:\n  imaps: {state: open, tls: {min_version: TLSv9}}\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("min_days_left '-3'"), std::string::npos) << bad.status().message();
  EXPECT_NE(bad.status().message().find("min_version 'TLSv9'"), std::string::npos) << bad.status().message();
}

}  // namespace
TEST(Probe, WhatAServerSentIsEscapedInTextAndValidUtf8InJson) {
  JudgedProbe j;
  j.result.host = "127.0.0.1";
  j.result.port = 143;
  j.result.state = "open";
  j.result.proto = probe::Proto::kImap;
  j.result.greeting = "* OK caf\xe9 \x1b[2J";
  j.result.auth_cleartext = {"PLAIN\x1b]0;owned\x07"};
  j.expected = "open";
  j.as_policy = true;
  j.reason = "open";
  std::string text = ProbeText({j}, false);
  EXPECT_EQ(text.find('\x1b'), std::string::npos) << text;
  EXPECT_NE(text.find("PLAIN\\x1b]0;owned\\x07"), std::string::npos) << text;
  std::string json = ProbeJson(j).dump();  // strict: throws on invalid UTF-8
  EXPECT_NE(json.find("caf\xef\xbf\xbd"), std::string::npos) << json;
}

}  // namespace mw
