// Status and Result: errors as values. Only main() turns them into exit codes.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace mw {

/// What kind of failure a Status carries; main() maps kinds to exit codes.
enum class Code {
  kOk,
  kInvalidPolicy,   ///< the policy (or another input file) is wrong; nothing was applied
  kIo,              ///< a file or directory could not be read or written
  kNetlink,         ///< the kernel refused or failed a request
  kFirewall,        ///< a firewall tool (iptables-restore, ipset, ufw) refused or failed
  kGenerationMoved, ///< the ruleset changed under us; re-plan
  kBusy,            ///< another mailward holds the lock
  kVerifyFailed,    ///< applied, verification failed, rolled back
  kRefused,         ///< a safety check refused the operation
  kNotFound,        ///< what the command works on is not there (no snapshot to roll back to)
  kInternal,
  kUsage,           ///< a command-line argument is wrong
  kPermission,      ///< the firewall needs root (CAP_NET_ADMIN) and this process lacks it
};

/// A value: OK, or a kind plus a human message ("file:line:col: what"). [[nodiscard]]: a
/// Status dropped on the floor is a warning; write `(void)` where ignoring one is meant.
class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status Ok() { return Status(); }
  static Status Error(Code code, std::string message) { return Status(code, std::move(message)); }
  static Status Invalid(std::string m) { return Error(Code::kInvalidPolicy, std::move(m)); }
  static Status Io(std::string m) { return Error(Code::kIo, std::move(m)); }
  static Status Netlink(std::string m) { return Error(Code::kNetlink, std::move(m)); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  /// Prepends context: "context: message".
  Status WithContext(const std::string& context) const {
    return ok() ? *this : Status(code_, context + ": " + message_);
  }

 private:
  Status(Code c, std::string m) : code_(c), message_(std::move(m)) {}
  Code code_ = Code::kOk;
  std::string message_;
};

[[noreturn]] void DieValueOfError(const Status& status);

/// A T or a failed Status. value(), `*` and `->` are checked: on an error they print the
/// error and abort (a programming error: test ok() first), never throw.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}
  Result(Status status) : v_(std::move(status)) {}
  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & {
    Check();
    return *std::get_if<T>(&v_);
  }
  const T& value() const& {
    Check();
    return *std::get_if<T>(&v_);
  }
  T&& value() && {
    Check();
    return std::move(*std::get_if<T>(&v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() { return value(); }
  const T& operator*() const { return value(); }

 private:
  void Check() const {
    if (!ok()) DieValueOfError(std::get<Status>(v_));
  }
  std::variant<T, Status> v_;
};

#define MW_RETURN_IF_ERROR(expr)        \
  do {                                  \
    ::mw::Status mw_status_ = (expr);   \
    if (!mw_status_.ok()) return mw_status_; \
  } while (0)

}  // namespace mw
