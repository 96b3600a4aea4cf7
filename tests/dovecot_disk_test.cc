// The Dovecot parser and auditor on real files (the disk FileSource and FileStat), and with an
// oracle (doveconf) that supplies the values.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <gtest/gtest.h>

#include "dovecot/audit.h"
#include "dovecot/config.h"

namespace mw::dovecot {
namespace {

class Dir {
 public:
  Dir() {
    char tmpl[] = "/tmp/mw-dovecot-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~Dir() { std::filesystem::remove_all(path); }
  std::string Write(const std::string& name, const std::string& text, mode_t mode) {
    std::string p = path + "/" + name;
    std::filesystem::create_directories(std::filesystem::path(p).parent_path());
    std::ofstream(p) << text;
    chmod(p.c_str(), mode);
    return p;
  }
  std::string path;
};

std::vector<std::string> Ids(const AuditResult& r) {
  std::vector<std::string> ids;
  for (const auto& f : r.findings) ids.push_back(f.id);
  std::sort(ids.begin(), ids.end());
  return ids;
}

TEST(DovecotDisk, RealFilesIncludesHostNamesAndPermissions) {
  Dir d;
  std::string conf = d.Write("dovecot.conf",
                             "protocols = imap\n!include_try conf.d/*.conf\n"
                             "remote localhost {\n  ssl = no\n}\n",
                             0644);
  d.Write("conf.d/10-ssl.conf", "ssl_key = <" + d.path + "/private/key.pem\n", 0644);
  d.Write("private/key.pem", "KEY", 0644);  // readable by everyone
  auto files = MakeDiskFileSource();
  auto cfg = Parse(conf, *files);
  ASSERT_TRUE(cfg.ok()) << cfg.status().message();
  EXPECT_EQ(cfg->files.size(), 2u);
  ASSERT_EQ(cfg->filters.size(), 2u);
  ASSERT_TRUE(cfg->filters[1].remote.has_value());
  EXPECT_EQ(FormatAddr(Family::kV4, cfg->filters[1].remote->cidr.addr), "127.0.0.1");  // localhost, resolved
  auto stat = MakeDiskFileStat();
  AuditResult r = Audit(*cfg, *stat, {});
  EXPECT_EQ(Ids(r), std::vector<std::string>{"ssl-key-exposed"});
  chmod((d.path + "/private/key.pem").c_str(), 0600);
  EXPECT_TRUE(Ids(Audit(*cfg, *stat, {})).empty());
  // A path through a symlink is the same file for cycle detection.
  std::filesystem::create_directory_symlink(d.path + "/conf.d", d.path + "/alias");
  d.Write("loop.conf", "!include alias/../loop.conf\n", 0644);
  auto loop = Parse(d.path + "/loop.conf", *files);
  ASSERT_FALSE(loop.ok());
  EXPECT_NE(loop.status().message().find("Recursive include file"), std::string::npos) << loop.status().message();
}

/// doveconf's answers: what it prints wins over what the builtin parser read.
class Oracle : public ValueOracle {
 public:
  std::map<std::string, std::string> values;
  std::vector<std::string> prefetched;
  std::optional<std::string> Get(const std::string& key, const Context&) override {
    auto it = values.find(key);
    if (it == values.end()) return std::nullopt;
    return it->second;
  }
  void Prefetch(const std::vector<std::string>& keys, const Context&) override {
    prefetched.insert(prefetched.end(), keys.begin(), keys.end());
  }
};

TEST(DovecotDisk, AnOracleSuppliesTheEffectiveValues) {
  Dir d;
  std::string conf = d.Write("dovecot.conf", "protocols = imap\nauth_debug = no\n"
                                             "service imap-login {\n  inet_listener imap {\n    port = 143\n  }\n}\n",
                             0644);
  auto files = MakeDiskFileSource();
  auto cfg = Parse(conf, *files);
  ASSERT_TRUE(cfg.ok()) << cfg.status().message();
  auto stat = MakeDiskFileStat();
  EXPECT_TRUE(Ids(Audit(*cfg, *stat, {})).empty());
  Oracle o;
  o.values["auth_debug"] = "yes";  // e.g. set by a file the builtin parser did not see
  AuditResult r = Audit(*cfg, *stat, {}, &o);
  EXPECT_EQ(Ids(r), std::vector<std::string>{"auth-debug"});
  o.values["disable_plaintext_auth"] = "no";
  AuditResult p = Audit(*cfg, *stat, {}, &o);
  auto ids = Ids(p);
  EXPECT_NE(std::find(ids.begin(), ids.end(), "cleartext-auth"), ids.end());
  // The listeners' settings were asked for in one batch.
  EXPECT_NE(std::find(o.prefetched.begin(), o.prefetched.end(), "service/imap-login/inet_listener/imap/port"),
            o.prefetched.end());
  EXPECT_EQ(SeverityRank("critical"), 0);
  EXPECT_EQ(SeverityRank("info"), 4);
  EXPECT_EQ(SeverityRank("bogus"), 5);
}

}  // namespace
}  // namespace mw::dovecot
