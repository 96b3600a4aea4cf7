#include "sys/tcp_table.h"

#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <vector>

#include "util/fs.h"

namespace mw::sys {

std::string TcpRow(unsigned sl, int family, const unsigned char* local, unsigned lport, const unsigned char* remote,
                   unsigned rport, unsigned state, unsigned uid, unsigned long long inode) {
  // The kernel prints each 32-bit word of the address as a native integer (%08X).
  auto addr = [&](const unsigned char* a) {
    std::string s;
    const int words = family == AF_INET ? 1 : 4;
    for (int w = 0; w < words; ++w) {
      uint32_t v;
      std::memcpy(&v, a + 4 * w, 4);
      char buf[9];
      std::snprintf(buf, sizeof buf, "%08X", v);
      s += buf;
    }
    return s;
  };
  char tail[160];
  std::snprintf(tail, sizeof tail, " %02X 00000000:00000000 00:00000000 00000000 %5u        0 %llu", state, uid, inode);
  char head[16];
  std::snprintf(head, sizeof head, "%4u: ", sl);
  char lp[8], rp[8];
  std::snprintf(lp, sizeof lp, ":%04X", lport & 0xffff);
  std::snprintf(rp, sizeof rp, ":%04X", rport & 0xffff);
  return head + addr(local) + lp + " " + addr(remote) + rp + tail + "\n";
}

namespace {

const char* ProcFile(int family) { return family == AF_INET ? "/proc/net/tcp" : "/proc/net/tcp6"; }

const char* Header() {
  return "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

std::optional<std::string> TcpTableFromSockDiag(int family) {
  Fd sock(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (sock.get() < 0) return std::nullopt;
  struct {
    nlmsghdr nlh;
    inet_diag_req_v2 req;
  } msg{};
  msg.nlh.nlmsg_len = sizeof msg;
  msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  msg.nlh.nlmsg_seq = 1;
  msg.req.sdiag_family = static_cast<uint8_t>(family);
  msg.req.sdiag_protocol = IPPROTO_TCP;
  msg.req.idiag_states = (1u << TCP_ESTABLISHED) | (1u << TCP_LISTEN);
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (sendto(sock.get(), &msg, sizeof msg, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0)
    return std::nullopt;
  std::string out = Header();
  std::vector<char> buf(64 * 1024);
  unsigned sl = 0;
  for (;;) {
    ssize_t n = recv(sock.get(), buf.data(), buf.size(), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return std::nullopt;
    }
    if (n == 0) return std::nullopt;
    int left = static_cast<int>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_type == NLMSG_DONE) return out;
      if (h->nlmsg_type == NLMSG_ERROR) return std::nullopt;  // e.g. no tcp_diag: /proc answers
      if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY || h->nlmsg_len < NLMSG_LENGTH(sizeof(inet_diag_msg))) continue;
      const auto* m = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
      const auto* src = reinterpret_cast<const unsigned char*>(m->id.idiag_src);
      const auto* dst = reinterpret_cast<const unsigned char*>(m->id.idiag_dst);
      out += TcpRow(sl++, family, src, ntohs(m->id.idiag_sport), dst, ntohs(m->id.idiag_dport), m->idiag_state,
                    m->idiag_uid, m->idiag_inode);
    }
  }
}

Result<std::string> TcpTableText(int family) {
  if (auto text = TcpTableFromSockDiag(family)) return *text;
  return mw::ReadFile(ProcFile(family));
}

}  // namespace mw::sys
