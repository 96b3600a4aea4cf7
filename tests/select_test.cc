// backend/select.h: which backend, from the host as FakeEnv shows it.
#include "backend/select.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "fakes/fake_backend.h"
#include "fakes/fake_env.h"

namespace mw {
namespace {

using testing::FakeEnv;

class Select : public ::testing::Test {
 protected:
  void SetUp() override {
    seams.env = &env;
    seams.nftables_usable = [this] { return nft; };
    seams.make = [this](BackendId id, const BackendConfig& cfg) -> std::unique_ptr<Backend> {
      made.push_back(BackendIdName(id));
      EXPECT_EQ(cfg.env, &env);
      EXPECT_EQ(cfg.state_dir, "/state");
      return std::make_unique<testing::FakeBackend>();
    };
  }
  void UfwOn() {
    env.programs.insert("ufw");
    env.Put("/etc/ufw/ufw.conf", "# comment\nENABLED=yes\nLOGLEVEL=low\n");
  }
  void Firewalld(const std::string& ns = "net:[1]") {
    env.Put("/proc/77/comm", "firewalld\n");
    env.links["/proc/77/ns/net"] = ns;
  }
  Result<Chosen> Choose(const std::string& flag, BackendKind k = BackendKind::kAuto) {
    made.clear();
    return ChooseBackend(flag, k, "/state", seams);
  }
  FakeEnv env;
  SelectSeams seams;
  bool nft = true;
  std::vector<std::string> made;
};

TEST_F(Select, AutoFollowsTheHost) {
  env.links["/proc/self/ns/net"] = "net:[1]";
  ASSERT_TRUE(Choose("").ok());
  EXPECT_EQ(made, std::vector<std::string>{"nftables"});
  nft = false;
  auto c = Choose("");
  EXPECT_EQ(made, std::vector<std::string>{"iptables"});
  EXPECT_EQ(c->reason, "auto: nftables is not available here, iptables is");
  Firewalld();
  c = Choose("");
  EXPECT_EQ(made, std::vector<std::string>{"nftables"});
  EXPECT_EQ(c->notes.size(), 1u);
  UfwOn();
  c = Choose("");
  EXPECT_EQ(made, std::vector<std::string>{"ufw"});
  EXPECT_TRUE(c->fights.empty());
}

TEST_F(Select, UfwInstalledButDisabledIsNotActive) {
  env.programs.insert("ufw");
  env.Put("/etc/ufw/ufw.conf", "ENABLED=no\n");
  EXPECT_FALSE(UfwActive(env));
  env.Put("/etc/ufw/ufw.conf", "ENABLED=yes\n");
  EXPECT_TRUE(UfwActive(env));
  env.programs.clear();
  EXPECT_FALSE(UfwActive(env));
}

TEST_F(Select, FirewalldInAnotherNamespaceDoesNotCount) {
  env.links["/proc/self/ns/net"] = "net:[1]";
  Firewalld("net:[2]");
  EXPECT_FALSE(ProcessRunning("firewalld", env));
  Firewalld("net:[1]");
  EXPECT_TRUE(ProcessRunning("firewalld", env));
  EXPECT_FALSE(ProcessRunning("sshd", env));
  env.Put("/proc/self/comm", "firewalld\n");  // not a pid
  env.files.erase("/proc/77/comm");
  EXPECT_FALSE(ProcessRunning("firewalld", env));
}

TEST_F(Select, NamedBackendsWithNotesAndFights) {
  UfwOn();
  env.links["/proc/self/ns/net"] = "net:[1]";
  Firewalld();
  auto c = Choose("nftables");
  EXPECT_EQ(c->reason, "nftables, as --backend says");
  EXPECT_EQ(c->notes.size(), 1u);
  c = Choose("", BackendKind::kIptables);
  EXPECT_EQ(c->reason, "iptables, as the policy says");
  EXPECT_EQ(c->fights.size(), 2u);
  c = Choose("ufw");
  EXPECT_EQ(made, std::vector<std::string>{"ufw"});
  EXPECT_EQ(c->fights.size(), 1u);
  auto bad = Choose("pf");
  EXPECT_EQ(bad.status().code(), Code::kInvalidPolicy);
  EXPECT_NE(bad.status().message().find("unknown backend 'pf'"), std::string::npos);
}

TEST_F(Select, ProcessesAreReadOnlyWhenFirewalldMatters) {
  // backend: nftables neither depends on nor reports firewalld: no process's name is read.
  Firewalld();
  env.links["/proc/self/ns/net"] = "net:[1]";
  env.reads.clear();
  ASSERT_TRUE(Choose("nftables").ok());
  for (const auto& r : env.reads) EXPECT_NE(r, "/proc/77/comm");
  // auto (without UFW) does look, and finds it.
  env.reads.clear();
  auto c = Choose("");
  ASSERT_TRUE(c.ok());
  EXPECT_NE(c->reason.find("firewalld"), std::string::npos);
  EXPECT_NE(std::find(env.reads.begin(), env.reads.end(), "/proc/77/comm"), env.reads.end());
}

TEST_F(Select, RemoveLooksAtEveryUsableBackendInOrder) {
  auto names = [&](const std::string& want) {
    made.clear();
    (void)RemoveBackends(want, "/state", seams);
    return made;
  };
  nft = false;
  EXPECT_TRUE(names("auto").empty());
  env.programs = {"ufw", "iptables-legacy-save"};
  nft = true;
  EXPECT_EQ(names("auto"), (std::vector<std::string>{"ufw", "iptables", "nftables"}));
  EXPECT_EQ(names("iptables"), std::vector<std::string>{"iptables"});
}

}  // namespace
}  // namespace mw
