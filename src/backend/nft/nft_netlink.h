// The netlink transport seam to nf_tables: `Transport` (send a batch, request a dump, read the
// ruleset generation) and `Socket`, its real implementation, the one file that talks netlink to
// the kernel (like nftables' src/mnl.c). Everything above it builds and parses messages without
// a kernel; unit tests use tests/fakes/fake_nft_transport.h, an in-memory nf_tables.
#pragma once

#include <libmnl/libmnl.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "util/status.h"

namespace mw::nft {

/// A transaction under construction: batch-begin (carrying the generation it was planned
/// against), one message per change, batch-end. The kernel applies all of it or none of it.
class Batch {
 public:
  /// REQUIRES: genid is the ruleset generation the plan was made against (0: do not check).
  explicit Batch(uint32_t genid);

  /// Reserves room for a message of at most `max_len` bytes and returns its header with
  /// sequence number set; `what` describes the change, for error messages.
  nlmsghdr* Add(uint16_t type, uint16_t family, uint16_t flags, size_t max_len, std::string what);
  /// Makes room for `bytes` more bytes of messages at once (growing by doubling would hold
  /// the old and the new buffer, three times the batch, while it copies).
  void Reserve(size_t bytes) {
    if (buf_.size() < used_ + bytes + 64) buf_.resize(used_ + bytes + 64);
  }
  /// Closes the message returned by the last Add (its length is now final).
  void Commit(nlmsghdr* nlh);
  void End();

  const std::vector<char>& bytes() const { return buf_; }
  size_t messages() const { return what_.size(); }
  /// The description of the message with this sequence number, or "".
  std::string Describe(uint32_t seq) const;
  uint32_t first_seq() const { return first_seq_; }

 private:
  std::vector<char> buf_;
  size_t used_ = 0;
  uint32_t first_seq_ = 0, next_seq_ = 0;
  std::vector<std::string> what_;
};

/// The way to nf_tables: requests with their replies, and batches.
class Transport {
 public:
  virtual ~Transport() = default;

  /// The ruleset generation (an NFT_MSG_GETGEN request).
  Result<uint32_t> GetGeneration();

  /// Sends a request (built by `build` into the given buffer of 64 KiB; it must return the
  /// header) and calls `cb` for each reply message until the dump or ack is complete.
  virtual Status Request(const std::function<nlmsghdr*(char* buf, uint32_t seq)>& build,
                         const std::function<int(const nlmsghdr*)>& cb) = 0;

  /// Sends the whole batch and reads every acknowledgement: all of it is applied or none. An
  /// error names the change that caused it. The generation moved: Code::kGenerationMoved.
  virtual Status Send(const Batch& batch) = 0;
};

/// The status of a batch the kernel answered with `err` (an errno, 0: applied) on the message
/// with sequence number `seq`; `extack` is the kernel's extended-ack text, if any.
Status BatchStatus(const Batch& batch, uint32_t seq, int err, const std::string& extack);

// How Socket reads the kernel's replies, apart from the socket (unit tests feed them bytes).

/// The kernel's extended-ack text of an error message (NLMSGERR_ATTR_MSG), or "".
std::string ExtAckMessage(const nlmsghdr* nlh);

/// Hands one datagram of replies to request `seq` to `cb`, message by message; *done when the
/// dump or the ack is complete. An error message is its errno; NLM_F_DUMP_INTR (the ruleset
/// changed during the dump) is Code::kGenerationMoved.
Status HandleReplies(const char* buf, size_t n, uint32_t seq, uint32_t portid,
                     const std::function<int(const nlmsghdr*)>& cb, bool* done);

/// The acknowledgements of a batch read so far, and its first error.
struct AckTally {
  size_t acks = 0;
  int first_errno = 0;
  uint32_t first_seq = 0;
  std::string first_extack;
};
/// Counts the acknowledgements in one datagram.
void CountAcks(const char* buf, size_t n, AckTally* tally);

/// Opens a transport: BackendConfig::nft_transport when set (tests: a fake), else a Socket.
using TransportFactory = std::function<Result<std::unique_ptr<Transport>>()>;
Result<std::unique_ptr<Transport>> OpenTransport(const TransportFactory& factory);

/// The socket's system calls, so unit tests can play the kernel at the socket level.
class Wire {
 public:
  virtual ~Wire() = default;
  /// Sends one datagram to the kernel (sendmsg).
  virtual ssize_t Send(const void* buf, size_t len) = 0;
  /// Receives one datagram (recv(2) flags: MSG_DONTWAIT, MSG_PEEK | MSG_TRUNC for its size).
  virtual ssize_t Recv(void* buf, size_t len, int flags) = 0;
  /// Waits for input; poll(2)'s result.
  virtual int Poll(int timeout_ms) = 0;
  /// Makes room in the send buffer for a batch of `bytes`.
  virtual void GrowSendBuffer(size_t bytes) = 0;
};

/// A netlink socket to nf_tables.
class Socket : public Transport {
 public:
  ~Socket() override;
  static Result<std::unique_ptr<Socket>> Open();
  /// A socket over another wire (unit tests), with this port id and first sequence number.
  static std::unique_ptr<Socket> Over(std::unique_ptr<Wire> wire, uint32_t portid, uint32_t seq);

  Status Request(const std::function<nlmsghdr*(char* buf, uint32_t seq)>& build,
                 const std::function<int(const nlmsghdr*)>& cb) override;

  /// Sends the whole batch in one sendmsg and reads every acknowledgement. An error names the
  /// change that caused it. ERESTART (the generation moved) becomes Code::kGenerationMoved.
  Status Send(const Batch& batch) override;

 private:
  explicit Socket(std::unique_ptr<Wire> wire) : wire_(std::move(wire)) {}
  std::unique_ptr<Wire> wire_;
  uint32_t portid_ = 0;
  uint32_t seq_ = 1;
};

}  // namespace mw::nft
