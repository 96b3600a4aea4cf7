// Policy files of the wrong shape: each problem is reported with file:line:column and what to
// write instead; several problems at once; directory layouts of --policy.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "policy/policy.h"

namespace mw {
namespace {

std::string Err(const std::string& text) {
  auto r = ParsePolicyText(text, "p.yaml");
  EXPECT_FALSE(r.ok()) << text;
  return r.ok() ? "" : r.status().message();
}

#define EXPECT_HAS(hay, needle) EXPECT_NE((hay).find(needle), std::string::npos) << (hay)

TEST(PolicyErrors, WrongShapesSayWhatToWrite) {
  EXPECT_HAS(Err("version: 1\nallowlists: [a, b]\n"), "p.yaml:2:13: 'allowlists' must map names to lists of addresses");
  EXPECT_HAS(Err("version: 1\nallowlists:\n  office: 198.51.100.1\n"),
             "p.yaml:3:11: allowlist 'office' must be a list of addresses or {file: PATH}");
  EXPECT_HAS(Err("version: 1\nallowlists:\n  office: {file: ''}\n"), "allowlist 'office': empty file name");
  EXPECT_HAS(Err("version: 1\nallowlists:\n  office: {file: [a, b]}\n"), "'file' must be a single value");
  EXPECT_HAS(Err("version: 1\nports: [imap]\n"), "p.yaml:2:8: 'ports' must map service names to settings");
  EXPECT_HAS(Err("version: 1\nports:\n  imap: closed\n"), "p.yaml:3:9: port 'imap' must be a mapping with at least 'state'");
  EXPECT_HAS(Err("version: 1\nports:\n  imap: {state: closed, allow: office}\n"),
             "'allow' must be a list of allowlist names, e.g. [office]");
  EXPECT_HAS(Err("version: 1\nallowlists: {office: []}\nports:\n  imap: {state: closed, allow: [[office]]}\n"),
             "'allow' entries must be allowlist names");
  EXPECT_HAS(Err("version: 1\nallowlists: {office: []}\nports:\n  imap: {state: closed, allow: [office, office]}\n"),
             "p.yaml:4:41: allowlist 'office' is listed twice");
  EXPECT_HAS(Err("version: 1\ntls: 14\nports: {imaps: {state: open}}\n"),
             "'tls' must be a mapping, e.g. {min_days_left: 14, min_version: TLSv1.2}");
  EXPECT_HAS(Err("version: 1\ndovecot: [a]\n"), "'dovecot' must be a mapping (config, ignore)");
  EXPECT_HAS(Err("version: 1\ndovecot: {ignore: auth-debug}\n"), "'ignore' must be a list of finding ids");
  EXPECT_HAS(Err("version: 1\n? [a, b]\n: 1\n"), "keys must be plain names");
  EXPECT_HAS(Err("version: 1\nports:\n  imaps: {state: open, rate_limit: 5/fortnight}\n"), "rate_limit");
}

TEST(PolicyErrors, SettingsGivenTwiceAcrossFilesNameTheFirstPlace) {
  char tmpl[] = "/tmp/mwpolerrXXXXXX";
  std::string dir = mkdtemp(tmpl);
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir + "/" + name) << text;
    chmod((dir + "/" + name).c_str(), 0644);
    return dir + "/" + name;
  };
  std::string a = write("a.yaml", "version: 1\nbackend: nftables\ndovecot: {config: /etc/dovecot/dovecot.conf}\n");
  std::string b = write("b.yaml", "version: 1\nbackend: iptables\ndovecot: {config: /srv/dovecot.conf}\n");
  std::string c = write("c.yaml", "version: 1\nbackend: nftables\n");
  auto r = LoadPolicy({a, b});
  ASSERT_FALSE(r.ok());
  EXPECT_HAS(r.status().message(), b + ":2:10: backend already set to 'nftables' at " + a + ":2:10");
  EXPECT_HAS(r.status().message(), b + ":3:1: 'dovecot' is already set at " + a + ":3:1");
  auto same = LoadPolicy({a, c});  // the same backend twice is no conflict
  EXPECT_TRUE(same.ok()) << same.status().message();
  EXPECT_STREQ(BackendName(same->backend), "nftables");
  EXPECT_STREQ(BackendName(BackendKind::kAuto), "auto");
  EXPECT_STREQ(BackendName(BackendKind::kIptables), "iptables");
  EXPECT_STREQ(BackendName(BackendKind::kUfw), "ufw");
  auto missing = LoadPolicy({a, dir + "/gone.yaml"});
  ASSERT_FALSE(missing.ok());
  EXPECT_HAS(missing.status().message(), dir + "/gone.yaml");
  std::filesystem::remove_all(dir);
}

TEST(PolicyErrors, ADirectoryWithoutPolicyYamlIsEveryYamlInIt) {
  if (geteuid() != 0) GTEST_SKIP() << "policy paths must be root's (CheckTrusted)";
  char tmpl[] = "/tmp/mwpoldirXXXXXX";
  std::string dir = mkdtemp(tmpl);
  chmod(dir.c_str(), 0755);
  auto files = PolicyFiles(dir);
  ASSERT_FALSE(files.ok());
  EXPECT_HAS(files.status().message(), "no policy files (*.yaml) in this directory");
  std::ofstream(dir + "/b.yaml") << "version: 1\n";
  std::ofstream(dir + "/a.yaml") << "version: 1\n";
  std::ofstream(dir + "/notes.txt") << "x\n";
  files = PolicyFiles(dir);
  ASSERT_TRUE(files.ok()) << files.status().message();
  EXPECT_EQ(*files, (std::vector<std::string>{dir + "/a.yaml", dir + "/b.yaml"}));
  std::filesystem::remove_all(dir);
}

TEST(PolicyErrors, KnownServicePorts) {
  EXPECT_EQ(KnownServicePort("imap"), 143);
  EXPECT_EQ(KnownServicePort("managesieve"), 4190);
  EXPECT_EQ(KnownServicePort("submissions"), 465);
  EXPECT_EQ(KnownServicePort("gopher"), 0);
}

}  // namespace
}  // namespace mw
