// nft_netlink's message handling without a socket: batches, the replies of a dump (multipart,
// done, error, interrupted), the acknowledgements of a batch (errors named by the change that
// caused them, the kernel's extended ack, the generation check), and OpenTransport's choice.
#include <arpa/inet.h>
#include <errno.h>
#include <gtest/gtest.h>

#include <cstring>
#include <initializer_list>
#include <vector>

#include "fakes/fake_nft_transport.h"  // libmnl, libnftnl, the netfilter headers
#include "backend/nft/nft_netlink.h"

namespace mw::nft {
namespace {

/// One NEWTABLE message for each description in `whats` (named by it in the batch), then the
/// batch's end.
void AddTableMessages(Batch* batch, std::initializer_list<const char*> whats) {
  nftnl_table* t = nftnl_table_alloc();
  nftnl_table_set_str(t, NFTNL_TABLE_NAME, "mailward");
  for (const char* what : whats) {
    nlmsghdr* nlh = batch->Add(NFT_MSG_NEWTABLE, NFPROTO_INET, NLM_F_CREATE, 512, what);
    nftnl_table_nlmsg_build_payload(nlh, t);
    batch->Commit(nlh);
  }
  nftnl_table_free(t);
  batch->End();
}

/// A datagram built message by message.
class Datagram {
 public:
  nlmsghdr* Put(uint16_t type, uint16_t flags, uint32_t seq, uint32_t portid = 0) {
    buf_.resize(used_ + 4096);
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf_.data() + used_);
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = flags;
    nlh->nlmsg_seq = seq;
    nlh->nlmsg_pid = portid;
    last_ = used_;
    return nlh;
  }
  /// A table message of a dump.
  void Table(const char* name, uint32_t seq, uint16_t flags = NLM_F_MULTI) {
    buf_.resize(used_ + 4096);
    nftnl_table* t = nftnl_table_alloc();
    nftnl_table_set_str(t, NFTNL_TABLE_NAME, name);
    nlmsghdr* nlh = nftnl_table_nlmsg_build_hdr(buf_.data() + used_, NFT_MSG_NEWTABLE, NFPROTO_INET, flags, seq);
    nftnl_table_nlmsg_build_payload(nlh, t);
    nftnl_table_free(t);
    used_ += NLMSG_ALIGN(nlh->nlmsg_len);
  }
  void Done(uint32_t seq) {
    nlmsghdr* nlh = Put(NLMSG_DONE, NLM_F_MULTI, seq);
    mnl_nlmsg_put_extra_header(nlh, sizeof(int));
    Close(nlh);
  }
  /// An error (or, with error 0, an ack) for message `seq`, with an extended-ack text.
  void Error(uint32_t seq, int error, const char* extack = nullptr) {
    nlmsghdr* nlh = Put(NLMSG_ERROR, extack ? (NLM_F_CAPPED | NLM_F_ACK_TLVS) : 0, seq);
    auto* err = static_cast<nlmsgerr*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nlmsgerr)));
    err->error = error;
    err->msg.nlmsg_len = sizeof(nlmsghdr);
    err->msg.nlmsg_seq = seq;
    if (extack) mnl_attr_put_strz(nlh, NLMSGERR_ATTR_MSG, extack);
    Close(nlh);
  }
  void Close(nlmsghdr* nlh) { used_ = last_ + NLMSG_ALIGN(nlh->nlmsg_len); }
  const char* data() const { return buf_.data(); }
  size_t size() const { return used_; }

 private:
  std::vector<char> buf_;
  size_t used_ = 0, last_ = 0;
};

TEST(NftNetlink, AMultipartDumpEndsAtDone) {
  Datagram w;
  w.Table("a", 5);
  w.Table("b", 5);
  std::vector<std::string> names;
  auto cb = [&](const nlmsghdr* nlh) {
    nftnl_table* t = nftnl_table_alloc();
    EXPECT_EQ(nftnl_table_nlmsg_parse(nlh, t), 0);
    names.push_back(nftnl_table_get_str(t, NFTNL_TABLE_NAME));
    nftnl_table_free(t);
    return MNL_CB_OK;
  };
  bool done = true;
  ASSERT_TRUE(HandleReplies(w.data(), w.size(), 5, 0, cb, &done).ok());
  EXPECT_FALSE(done);  // more datagrams to come
  Datagram w2;
  w2.Table("c", 5);
  w2.Done(5);
  ASSERT_TRUE(HandleReplies(w2.data(), w2.size(), 5, 0, cb, &done).ok());
  EXPECT_TRUE(done);
  EXPECT_EQ(names, (std::vector<std::string>{"a", "b", "c"}));
}

TEST(NftNetlink, AnErrorReplyIsItsErrno) {
  Datagram w;
  w.Error(9, -EPERM);
  bool done = false;
  Status s = HandleReplies(w.data(), w.size(), 9, 0, [](const nlmsghdr*) { return MNL_CB_OK; }, &done);
  EXPECT_EQ(s.code(), Code::kNetlink);
  EXPECT_NE(s.message().find("Operation not permitted"), std::string::npos) << s.message();
  Datagram ack;
  ack.Error(9, 0);
  ASSERT_TRUE(HandleReplies(ack.data(), ack.size(), 9, 0, [](const nlmsghdr*) { return MNL_CB_OK; }, &done).ok());
  EXPECT_TRUE(done);
}

TEST(NftNetlink, AnInterruptedDumpMovesTheGeneration) {
  Datagram w;
  w.Table("a", 3, NLM_F_MULTI | NLM_F_DUMP_INTR);
  bool done = false;
  Status s = HandleReplies(w.data(), w.size(), 3, 0, [](const nlmsghdr*) { return MNL_CB_OK; }, &done);
  EXPECT_EQ(s.code(), Code::kGenerationMoved) << s.message();
}

TEST(NftNetlink, AcksNameTheChangeThatFailedWithTheExtendedAck) {
  Batch batch(42);
  AddTableMessages(&batch, {"add table inet mailward", "add set allow_x"});
  EXPECT_EQ(batch.messages(), 2u);
  EXPECT_EQ(batch.Describe(batch.first_seq() + 1), "add set allow_x");
  EXPECT_EQ(batch.Describe(batch.first_seq() + 7), "");
  testing::NftBatch decoded = testing::DecodeBatch(batch.bytes());
  EXPECT_EQ(decoded.genid, 42u);
  EXPECT_EQ(decoded.Count(NFT_MSG_NEWTABLE), 2u);

  Datagram w;
  w.Error(batch.first_seq(), 0);
  w.Error(batch.first_seq() + 1, -EEXIST, "Set exists");
  AckTally tally;
  CountAcks(w.data(), w.size(), &tally);
  EXPECT_EQ(tally.acks, 2u);
  EXPECT_EQ(tally.first_errno, EEXIST);
  EXPECT_EQ(tally.first_extack, "Set exists");
  Status s = BatchStatus(batch, tally.first_seq, tally.first_errno, tally.first_extack);
  EXPECT_EQ(s.code(), Code::kNetlink);
  EXPECT_EQ(s.message(), "the kernel refused the batch, nothing was applied: add set allow_x: File exists (Set exists)");
  EXPECT_TRUE(BatchStatus(batch, 0, 0, "").ok());
  EXPECT_EQ(BatchStatus(batch, batch.first_seq(), ERESTART, "").code(), Code::kGenerationMoved);
  EXPECT_NE(BatchStatus(batch, 999, ENOENT, "").message().find("the batch: No such file"), std::string::npos);
}

TEST(NftNetlink, AnUncappedErrorEchoIsSkippedForItsExtendedAck) {
  // Without NLM_F_CAPPED the refused message is echoed before the attributes.
  std::vector<char> buf(4096);
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  nlh->nlmsg_type = NLMSG_ERROR;
  nlh->nlmsg_flags = NLM_F_ACK_TLVS;
  auto* err = static_cast<nlmsgerr*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nlmsgerr)));
  err->error = -EINVAL;
  err->msg.nlmsg_len = sizeof(nlmsghdr) + 8;
  mnl_nlmsg_put_extra_header(nlh, 8);  // the echoed message's body
  mnl_attr_put_strz(nlh, NLMSGERR_ATTR_MSG, "bad key");
  EXPECT_EQ(ExtAckMessage(nlh), "bad key");
  nlh->nlmsg_flags = 0;
  EXPECT_EQ(ExtAckMessage(nlh), "");
}

/// The kernel's end of a socket, scripted: what it answers to each datagram sent.
class ScriptedWire : public nft::Wire {
 public:
  std::vector<std::vector<char>> sent;
  std::vector<std::vector<char>> queue;  ///< datagrams to receive, in order
  int send_errno = 0;
  size_t grown = 0;
  ssize_t Send(const void* buf, size_t len) override {
    if (send_errno) {
      errno = send_errno;
      return -1;
    }
    sent.emplace_back(static_cast<const char*>(buf), static_cast<const char*>(buf) + len);
    return static_cast<ssize_t>(len);
  }
  ssize_t Recv(void* buf, size_t len, int flags) override {
    if (queue.empty()) {
      errno = (flags & MSG_DONTWAIT) ? EAGAIN : EBADF;
      return -1;
    }
    auto& d = queue.front();
    size_t n = std::min(len, d.size());
    std::memcpy(buf, d.data(), n);
    ssize_t whole = static_cast<ssize_t>(d.size());
    if (!(flags & MSG_PEEK)) queue.erase(queue.begin());
    return (flags & MSG_TRUNC) ? whole : static_cast<ssize_t>(n);
  }
  int Poll(int) override { return queue.empty() ? 0 : 1; }
  void GrowSendBuffer(size_t bytes) override { grown = bytes; }
  void Queue(const Datagram& w) { queue.emplace_back(w.data(), w.data() + w.size()); }
};

TEST(NftNetlink, ASocketReadsADumpOverItsWire) {
  auto wire = std::make_unique<ScriptedWire>();
  ScriptedWire* k = wire.get();
  Datagram part1, part2;
  part1.Table("a", 100, NLM_F_MULTI);
  part2.Table("b", 100, NLM_F_MULTI);
  part2.Done(100);
  k->Queue(part1);
  k->Queue(part2);
  auto sock = Socket::Over(std::move(wire), 0, 100);
  std::vector<std::string> names;
  Status s = sock->Request(
      [](char* buf, uint32_t seq) { return nftnl_table_nlmsg_build_hdr(buf, NFT_MSG_GETTABLE, NFPROTO_UNSPEC, NLM_F_DUMP, seq); },
      [&](const nlmsghdr* nlh) {
        nftnl_table* t = nftnl_table_alloc();
        if (nftnl_table_nlmsg_parse(nlh, t) == 0) names.push_back(nftnl_table_get_str(t, NFTNL_TABLE_NAME));
        nftnl_table_free(t);
        return MNL_CB_OK;
      });
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(names, (std::vector<std::string>{"a", "b"}));
  ASSERT_EQ(k->sent.size(), 1u);
  EXPECT_EQ(reinterpret_cast<const nlmsghdr*>(k->sent[0].data())->nlmsg_type & 0xff, NFT_MSG_GETTABLE);
  // The generation: a NEWGEN reply, then its ack.
  std::vector<char> buf(4096);
  nlmsghdr* g = nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_NEWGEN, AF_UNSPEC, 0, 101);
  mnl_attr_put_u32(g, NFTA_GEN_ID, htonl(77));
  k->queue.emplace_back(buf.data(), buf.data() + g->nlmsg_len);
  Datagram ack;
  ack.Error(101, 0);
  k->Queue(ack);
  auto id = sock->GetGeneration();
  ASSERT_TRUE(id.ok()) << id.status().message();
  EXPECT_EQ(*id, 77u);
  // A refused request, a failed send, a failed receive.
  Datagram eperm;
  eperm.Error(102, -EPERM);
  k->Queue(eperm);
  EXPECT_NE(sock->GetGeneration().status().message().find("Operation not permitted"), std::string::npos);
  EXPECT_FALSE(sock->GetGeneration().ok());  // nothing queued: the receive fails
  k->send_errno = ENOBUFS;
  EXPECT_NE(sock->GetGeneration().status().message().find("netlink send failed"), std::string::npos);
}

TEST(NftNetlink, ASocketSendsABatchAndReadsItsAcks) {
  Batch batch(5);
  AddTableMessages(&batch, {"add table inet mailward", "delete table inet mailward"});

  auto wire = std::make_unique<ScriptedWire>();
  ScriptedWire* k = wire.get();
  auto sock = Socket::Over(std::move(wire), 0, 1);
  Datagram acks;
  acks.Error(batch.first_seq(), 0);
  acks.Error(batch.first_seq() + 1, 0);
  k->Queue(acks);
  ASSERT_TRUE(sock->Send(batch).ok());
  EXPECT_EQ(k->sent.size(), 1u);
  EXPECT_EQ(k->sent[0].size(), batch.bytes().size());
  EXPECT_EQ(k->grown, batch.bytes().size());
  // An error on the second change, with the kernel's text, in a datagram of its own.
  Datagram a1, a2;
  a1.Error(batch.first_seq(), 0);
  a2.Error(batch.first_seq() + 1, -ENOENT, "No such table");
  k->Queue(a1);
  k->Queue(a2);
  Status s = sock->Send(batch);
  EXPECT_EQ(s.message(),
            "the kernel refused the batch, nothing was applied: delete table inet mailward: No such file or directory "
            "(No such table)");
  // The generation check: ERESTART on the first message, no further ack.
  Datagram moved;
  moved.Error(batch.first_seq(), -ERESTART);
  k->Queue(moved);
  EXPECT_EQ(sock->Send(batch).code(), Code::kGenerationMoved);
  // No acknowledgement at all: a timeout, not a hang.
  EXPECT_NE(sock->Send(batch).message().find("did not acknowledge"), std::string::npos);
  k->send_errno = EMSGSIZE;
  EXPECT_NE(sock->Send(batch).message().find("sending the batch failed"), std::string::npos);
}

TEST(NftNetlink, OpenTransportUsesTheFactory) {
  testing::FakeNftKernel kernel;
  auto t = OpenTransport(kernel.Factory());
  ASSERT_TRUE(t.ok());
  auto gen = (*t)->GetGeneration();
  ASSERT_TRUE(gen.ok());
  EXPECT_EQ(*gen, kernel.generation);
  kernel.fail_requests = EPERM;
  EXPECT_FALSE((*t)->GetGeneration().ok());
}

}  // namespace
}  // namespace mw::nft
