// sys/tcp_table: the sock_diag dump written as /proc/net/tcp text. Checked against the kernel's
// own /proc/net/tcp{,6} on real loopback sockets this test opens (reads only), and through the
// anti-lockout parser.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <set>
#include <sstream>
#include <string>

#include "ops/lockout.h"
#include "sys/tcp_table.h"
#include "util/fs.h"

namespace mw::sys {
namespace {

/// "local remote state inode" of each row of a /proc/net/tcp text.
std::set<std::string> Rows(const std::string& text) {
  std::set<std::string> out;
  std::istringstream in(text);
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string sl, local, remote, st, q, tm, retr, uid, timeout, inode;
    if (f >> sl >> local >> remote >> st >> q >> tm >> retr >> uid >> timeout >> inode)
      out.insert(local + " " + remote + " " + st + " " + inode);
  }
  return out;
}

unsigned long long Inode(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 ? st.st_ino : 0;
}

TEST(TcpTable, RowsParseAsTheKernelsOwn) {
  unsigned char local[4] = {198, 51, 100, 1}, remote[4] = {192, 0, 2, 50};
  std::string text = "header\n" + TcpRow(0, AF_INET, local, 22, remote, 40000, 1, 0, 7);
  EXPECT_NE(text.find("016433C6:0016 320200C0:9C40 01"), std::string::npos) << text;
  auto s = ops::FindSshSessions(nullptr, {text});
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].client, "192.0.2.50");
  EXPECT_EQ(s[0].port, 22);

  in6_addr l6, r6;
  ASSERT_EQ(inet_pton(AF_INET6, "2001:db8::1", &l6), 1);
  ASSERT_EQ(inet_pton(AF_INET6, "2001:db8::77", &r6), 1);
  text = "header\n" + TcpRow(0, AF_INET6, l6.s6_addr, 22, r6.s6_addr, 50000, 1, 0, 8);
  s = ops::FindSshSessions(nullptr, {text});
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].client, "2001:db8::77");
}

TEST(TcpTable, AgreesWithProcNetTcpOnRealSockets) {
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(lfd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(listen(lfd, 4), 0);
  socklen_t len = sizeof a;
  ASSERT_EQ(getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  int cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(connect(cfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  int sfd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
  ASSERT_GE(sfd, 0);
  char port[8];
  std::snprintf(port, sizeof port, ":%04X", ntohs(a.sin_port));

  auto diag = TcpTableFromSockDiag(AF_INET);  // the dump itself, not the /proc fallback
  ASSERT_TRUE(diag.has_value()) << "sock_diag did not answer";
  auto proc = ReadFile("/proc/net/tcp");
  ASSERT_TRUE(proc.ok());
  // Our three sockets, in both: the listener, and each end of the connection.
  auto mine = [&](const std::set<std::string>& rows) {
    std::set<std::string> out;
    for (const auto& r : rows)
      if (r.find(port) != std::string::npos && (r.find(" 0A ") != std::string::npos || r.find(" 01 ") != std::string::npos))
        out.insert(r);
    return out;
  };
  auto from_diag = mine(Rows(*diag)), from_proc = mine(Rows(*proc));
  EXPECT_EQ(from_diag.size(), 3u) << *diag;
  EXPECT_EQ(from_diag, from_proc);
  bool listener = false;
  for (const auto& r : from_diag)
    listener |= r == std::string("0100007F") + port + " 00000000:0000 0A " + std::to_string(Inode(lfd));
  EXPECT_TRUE(listener) << *diag;
  close(sfd);
  close(cfd);
  close(lfd);
}

TEST(TcpTable, Ipv6Loopback) {
  int lfd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(lfd, 0);
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  if (bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(lfd);
    GTEST_SKIP() << "no IPv6 loopback here";
  }
  ASSERT_EQ(listen(lfd, 4), 0);
  socklen_t len = sizeof a;
  ASSERT_EQ(getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  char port[8];
  std::snprintf(port, sizeof port, ":%04X", ntohs(a.sin6_port));
  auto diag = TcpTableFromSockDiag(AF_INET6);
  ASSERT_TRUE(diag.has_value()) << "sock_diag did not answer";
  auto proc = ReadFile("/proc/net/tcp6");
  ASSERT_TRUE(proc.ok());
  std::string want = "00000000000000000000000001000000" + std::string(port) + " 00000000000000000000000000000000:0000 0A " +
                     std::to_string(Inode(lfd));
  EXPECT_EQ(Rows(*diag).count(want), 1u) << *diag;
  EXPECT_EQ(Rows(*proc).count(want), 1u) << *proc;
  close(lfd);
}

}  // namespace
}  // namespace mw::sys
