#include "backend/nft/nft_netlink.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <libnftnl/common.h>
#include <libnftnl/gen.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>

#include <cstring>

#include "util/timing.h"

namespace mw::nft {
namespace {
constexpr size_t kRecvBuf = 1 << 16;        // one read: enough for the largest dump skb
constexpr int kSocketRcvBuf = 4 << 20;      // the kernel's queue for replies
std::string Err(int e) { return std::strerror(e); }

/// A batch-begin or batch-end message for the nf_tables subsystem.
nlmsghdr* PutMarker(char* at, uint16_t type, uint32_t seq) {
  nlmsghdr* nlh = mnl_nlmsg_put_header(at);
  nlh->nlmsg_type = type;
  nlh->nlmsg_flags = NLM_F_REQUEST;
  nlh->nlmsg_seq = seq;
  auto* nfg = static_cast<nfgenmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nfgenmsg)));
  nfg->nfgen_family = AF_UNSPEC;
  nfg->version = NFNETLINK_V0;
  nfg->res_id = htons(NFNL_SUBSYS_NFTABLES);
  return nlh;
}
}  // namespace

std::string ExtAckMessage(const nlmsghdr* nlh) {
  if (!(nlh->nlmsg_flags & NLM_F_ACK_TLVS)) return "";
  const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
  size_t off = sizeof(nlmsgerr);
  if (!(nlh->nlmsg_flags & NLM_F_CAPPED)) off += err->msg.nlmsg_len - sizeof(nlmsghdr);
  size_t payload = nlh->nlmsg_len - NLMSG_HDRLEN;
  if (err->msg.nlmsg_len < sizeof(nlmsghdr) || off > payload) return "";
  const char* p = static_cast<const char*>(mnl_nlmsg_get_payload(nlh)) + off;
  size_t left = payload - off;
  while (left >= sizeof(nlattr)) {
    const auto* a = reinterpret_cast<const nlattr*>(p);
    if (a->nla_len < sizeof(nlattr) || a->nla_len > left) break;
    if ((a->nla_type & NLA_TYPE_MASK) == NLMSGERR_ATTR_MSG) {
      const char* s = static_cast<const char*>(mnl_attr_get_payload(a));
      return std::string(s, strnlen(s, a->nla_len - sizeof(nlattr)));
    }
    size_t step = MNL_ALIGN(a->nla_len);
    if (step > left) break;
    p += step;
    left -= step;
  }
  return "";
}

Batch::Batch(uint32_t genid) {
  first_seq_ = static_cast<uint32_t>(time(nullptr));
  next_seq_ = first_seq_;
  buf_.resize(1 << 16);
  nlmsghdr* nlh = PutMarker(buf_.data(), NFNL_MSG_BATCH_BEGIN, next_seq_++);
  if (genid) mnl_attr_put_u32(nlh, NFNL_BATCH_GENID, htonl(genid));
  used_ = NLMSG_ALIGN(nlh->nlmsg_len);
  first_seq_ = next_seq_;
}

nlmsghdr* Batch::Add(uint16_t type, uint16_t family, uint16_t flags, size_t max_len, std::string what) {
  if (buf_.size() < used_ + max_len + 64) buf_.resize(std::max(buf_.size() * 2, used_ + max_len + 64));
  uint32_t seq = next_seq_++;
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf_.data() + used_, type, family, flags | NLM_F_ACK, seq);
  what_.push_back(std::move(what));
  return nlh;
}

void Batch::Commit(nlmsghdr* nlh) { used_ += NLMSG_ALIGN(nlh->nlmsg_len); }

void Batch::End() {
  if (buf_.size() < used_ + 64) buf_.resize(used_ + 64);
  nlmsghdr* nlh = PutMarker(buf_.data() + used_, NFNL_MSG_BATCH_END, next_seq_++);
  used_ += NLMSG_ALIGN(nlh->nlmsg_len);
  buf_.resize(used_);
}

std::string Batch::Describe(uint32_t seq) const {
  if (seq < first_seq_ || seq - first_seq_ >= what_.size()) return "";
  return what_[seq - first_seq_];
}

namespace {
/// The real wire: a netlink socket.
class NetlinkWire : public Wire {
 public:
  explicit NetlinkWire(mnl_socket* nl) : nl_(nl) {}
  ~NetlinkWire() override { mnl_socket_close(nl_); }
  ssize_t Send(const void* buf, size_t len) override {
    sockaddr_nl snl{};
    snl.nl_family = AF_NETLINK;
    iovec iov{const_cast<void*>(buf), len};
    msghdr msg{};
    msg.msg_name = &snl;
    msg.msg_namelen = sizeof snl;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    return sendmsg(mnl_socket_get_fd(nl_), &msg, 0);
  }
  ssize_t Recv(void* buf, size_t len, int flags) override {
    // Blocking reads go through libmnl (it checks the sender is the kernel).
    if (flags == 0) return mnl_socket_recvfrom(nl_, buf, len);
    return recv(mnl_socket_get_fd(nl_), buf, len, flags);
  }
  int Poll(int timeout_ms) override {
    pollfd pfd{mnl_socket_get_fd(nl_), POLLIN, 0};
    return poll(&pfd, 1, timeout_ms);
  }
  void GrowSendBuffer(size_t bytes) override {
    int fd = mnl_socket_get_fd(nl_);
    int snd = static_cast<int>(std::min<size_t>(bytes + 4096, 1u << 30));
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &snd, sizeof snd) != 0)
      setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &snd, sizeof snd);
  }

 private:
  mnl_socket* nl_;
};
}  // namespace

Socket::~Socket() = default;

std::unique_ptr<Socket> Socket::Over(std::unique_ptr<Wire> wire, uint32_t portid, uint32_t seq) {
  std::unique_ptr<Socket> s(new Socket(std::move(wire)));
  s->portid_ = portid;
  s->seq_ = seq;
  return s;
}

Result<std::unique_ptr<Socket>> Socket::Open() {
  mnl_socket* nl = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
  if (!nl) return Status::Netlink("cannot open a netfilter netlink socket: " + Err(errno));
  if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
    int e = errno;
    mnl_socket_close(nl);
    return Status::Netlink("cannot bind the netlink socket: " + Err(e));
  }
  int fd = mnl_socket_get_fd(nl);
  int rcv = kSocketRcvBuf;
  // FORCE needs CAP_NET_ADMIN; fall back to the capped variant.
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof rcv) != 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
  int one = 1;
  setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
  // An error ack would otherwise echo the whole refused message (up to 64 KB of elements and
  // more); capped, it carries only the header. Send() still reads an uncapped one whole.
  setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
  return Over(std::make_unique<NetlinkWire>(nl), mnl_socket_get_portid(nl),
              static_cast<uint32_t>(time(nullptr)) ^ 0x5a5a0000u);
}

Result<std::unique_ptr<Transport>> OpenTransport(const TransportFactory& factory) {
  if (factory) return factory();
  auto s = Socket::Open();
  if (!s.ok()) return s.status();
  return std::unique_ptr<Transport>(std::move(s.value()));
}

Result<uint32_t> Transport::GetGeneration() {
  uint32_t genid = 0;
  bool got = false;
  Status st = Request(
      [](char* buf, uint32_t seq) {
        return nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETGEN, AF_UNSPEC, NLM_F_ACK, seq);
      },
      [&](const nlmsghdr* nlh) {
        nftnl_gen* gen = nftnl_gen_alloc();
        if (nftnl_gen_nlmsg_parse(nlh, gen) == 0) {
          genid = nftnl_gen_get_u32(gen, NFTNL_GEN_ID);
          got = true;
        }
        nftnl_gen_free(gen);
        return MNL_CB_OK;
      });
  if (!st.ok()) return st.WithContext("reading the ruleset generation");
  if (!got) return Status::Netlink("the kernel sent no ruleset generation");
  return genid;
}

namespace {
struct CbCtx {
  const std::function<int(const nlmsghdr*)>* fn;
};
int DataCb(const nlmsghdr* nlh, void* data) { return (*static_cast<CbCtx*>(data)->fn)(nlh); }
}  // namespace

Status Socket::Request(const std::function<nlmsghdr*(char* buf, uint32_t seq)>& build,
                       const std::function<int(const nlmsghdr*)>& cb) {
  std::vector<char> buf(kRecvBuf);
  uint32_t seq = seq_++;
  nlmsghdr* nlh = build(buf.data(), seq);
  if (wire_->Send(nlh, nlh->nlmsg_len) < 0) return Status::Netlink("netlink send failed: " + Err(errno));
  for (;;) {
    ssize_t n = wire_->Recv(buf.data(), buf.size(), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::Netlink("netlink receive failed: " + Err(errno));
    }
    bool done = false;
    MW_RETURN_IF_ERROR(HandleReplies(buf.data(), static_cast<size_t>(n), seq, portid_, cb, &done));
    if (done) break;
  }
  return Status::Ok();
}

Status HandleReplies(const char* buf, size_t n, uint32_t seq, uint32_t portid,
                     const std::function<int(const nlmsghdr*)>& cb, bool* done) {
  CbCtx ctx{&cb};
  errno = 0;
  int ret = mnl_cb_run(buf, n, seq, portid, DataCb, &ctx);
  *done = ret == MNL_CB_STOP;
  if (ret < 0) {
    if (errno == EINTR) {
      // The dump was interrupted by a concurrent change (NLM_F_DUMP_INTR).
      return Status::Error(Code::kGenerationMoved, "the ruleset changed during the dump");
    }
    return Status::Netlink(Err(errno));
  }
  return Status::Ok();
}

Status Socket::Send(const Batch& batch) {
  const auto& bytes = batch.bytes();
  wire_->GrowSendBuffer(bytes.size());
  {
    Phase phase("kernel commit");
    if (wire_->Send(bytes.data(), bytes.size()) < 0) return Status::Netlink("sending the batch failed: " + Err(errno));
  }

  // Every change message asked for an ack; the kernel has processed the whole batch by the
  // time sendmsg returns, so read until all acks are in or an error shows.
  std::vector<char> buf(kRecvBuf);
  AckTally acks;
  while (acks.acks < batch.messages()) {
    // The size of the next datagram first: an error that echoes a large message (a kernel
    // without NETLINK_CAP_ACK) is read whole, never cut off and lost.
    ssize_t want = wire_->Recv(buf.data(), 0, MSG_DONTWAIT | MSG_PEEK | MSG_TRUNC);
    if (want > static_cast<ssize_t>(buf.size())) buf.resize(static_cast<size_t>(want));
    ssize_t n = wire_->Recv(buf.data(), buf.size(), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (acks.first_errno) break;
        int pr = wire_->Poll(10000);
        if (pr == 0)
          return Status::Netlink("the kernel did not acknowledge every change of the batch within 10 s");
        continue;
      }
      return Status::Netlink("reading the batch acknowledgements failed: " + Err(errno));
    }
    CountAcks(buf.data(), static_cast<size_t>(n), &acks);
  }
  return BatchStatus(batch, acks.first_seq, acks.first_errno, acks.first_extack);
}

void CountAcks(const char* buf, size_t n, AckTally* tally) {
  int left = static_cast<int>(n);
  for (const nlmsghdr* nlh = reinterpret_cast<const nlmsghdr*>(buf); mnl_nlmsg_ok(nlh, left);
       nlh = mnl_nlmsg_next(nlh, &left)) {
    if (nlh->nlmsg_type != NLMSG_ERROR) continue;
    const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
    ++tally->acks;
    if (err->error != 0 && tally->first_errno == 0) {
      tally->first_errno = -err->error;
      tally->first_seq = err->msg.nlmsg_seq;
      tally->first_extack = ExtAckMessage(nlh);
    }
  }
}

Status BatchStatus(const Batch& batch, uint32_t seq, int err, const std::string& extack) {
  if (err == 0) return Status::Ok();
  if (err == ERESTART || err == EINTR)
    return Status::Error(Code::kGenerationMoved,
                         "the ruleset changed since it was read (generation moved); nothing was applied");
  std::string what = batch.Describe(seq);
  if (what.empty()) what = "the batch";
  std::string error = what + ": " + Err(err);
  if (!extack.empty()) error += " (" + extack + ")";
  return Status::Netlink("the kernel refused the batch, nothing was applied: " + error);
}

}  // namespace mw::nft
