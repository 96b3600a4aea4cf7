// The one file that talks netlink to nf_tables (like nftables' src/mnl.c). Everything above it
// builds and parses messages without a kernel.
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

/// A netlink socket to nf_tables.
class Socket {
 public:
  ~Socket();
  static Result<std::unique_ptr<Socket>> Open();

  /// The ruleset generation (NFT_MSG_GETGEN).
  Result<uint32_t> GetGeneration();

  /// Sends a request (built by `build` into the given buffer; it must return the header) and
  /// calls `cb` for each reply message until the dump or ack is complete.
  Status Request(const std::function<nlmsghdr*(char* buf, uint32_t seq)>& build,
                 const std::function<int(const nlmsghdr*)>& cb);

  /// Sends the whole batch in one sendmsg and reads every acknowledgement. An error names the
  /// change that caused it. ERESTART (the generation moved) becomes Code::kGenerationMoved.
  Status Send(const Batch& batch);

 private:
  explicit Socket(mnl_socket* nl) : nl_(nl) {}
  mnl_socket* nl_;
  uint32_t portid_ = 0;
  uint32_t seq_ = 1;
};

}  // namespace mw::nft
