// nft_netlink's message handling without a socket: batches, the replies of a dump (multipart,
// done, error, interrupted), the acknowledgements of a batch (errors named by the change that
// caused them, the kernel's extended ack, the generation check), and OpenTransport's choice.
#include <arpa/inet.h>
#include <errno.h>
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "fakes/fake_nft_transport.h"  // libmnl, libnftnl, the netfilter headers
#include "backend/nft/nft_netlink.h"

namespace mw::nft {
namespace {

/// Datagrams built message by message.
class Wire {
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
  Wire w;
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
  Wire w2;
  w2.Table("c", 5);
  w2.Done(5);
  ASSERT_TRUE(HandleReplies(w2.data(), w2.size(), 5, 0, cb, &done).ok());
  EXPECT_TRUE(done);
  EXPECT_EQ(names, (std::vector<std::string>{"a", "b", "c"}));
}

TEST(NftNetlink, AnErrorReplyIsItsErrno) {
  Wire w;
  w.Error(9, -EPERM);
  bool done = false;
  Status s = HandleReplies(w.data(), w.size(), 9, 0, [](const nlmsghdr*) { return MNL_CB_OK; }, &done);
  EXPECT_EQ(s.code(), Code::kNetlink);
  EXPECT_NE(s.message().find("Operation not permitted"), std::string::npos) << s.message();
  Wire ack;
  ack.Error(9, 0);
  ASSERT_TRUE(HandleReplies(ack.data(), ack.size(), 9, 0, [](const nlmsghdr*) { return MNL_CB_OK; }, &done).ok());
  EXPECT_TRUE(done);
}

TEST(NftNetlink, AnInterruptedDumpMovesTheGeneration) {
  Wire w;
  w.Table("a", 3, NLM_F_MULTI | NLM_F_DUMP_INTR);
  bool done = false;
  Status s = HandleReplies(w.data(), w.size(), 3, 0, [](const nlmsghdr*) { return MNL_CB_OK; }, &done);
  EXPECT_EQ(s.code(), Code::kGenerationMoved) << s.message();
}

TEST(NftNetlink, AcksNameTheChangeThatFailedWithTheExtendedAck) {
  Batch batch(42);
  nftnl_table* t = nftnl_table_alloc();
  nftnl_table_set_str(t, NFTNL_TABLE_NAME, "mailward");
  for (const char* what : {"add table inet mailward", "add set allow_x"}) {
    nlmsghdr* nlh = batch.Add(NFT_MSG_NEWTABLE, NFPROTO_INET, NLM_F_CREATE, 512, what);
    nftnl_table_nlmsg_build_payload(nlh, t);
    batch.Commit(nlh);
  }
  nftnl_table_free(t);
  batch.End();
  EXPECT_EQ(batch.messages(), 2u);
  EXPECT_EQ(batch.Describe(batch.first_seq() + 1), "add set allow_x");
  EXPECT_EQ(batch.Describe(batch.first_seq() + 7), "");
  testing::NftBatch decoded = testing::DecodeBatch(batch.bytes());
  EXPECT_EQ(decoded.genid, 42u);
  EXPECT_EQ(decoded.Count(NFT_MSG_NEWTABLE), 2u);

  Wire w;
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
