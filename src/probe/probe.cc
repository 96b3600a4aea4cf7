#include "probe/probe.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <memory>
#include <condition_variable>
#include <chrono>
#include <cstring>
#include <ctime>
#include <thread>

#include "util/fs.h"

namespace mw::probe {
namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kMaxLine = 8192;    // a greeting longer than this is cut (a 100 MB one too)
constexpr int kMaxLines = 200;       // capability listings

std::string Upper(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::toupper(c); });
  return s;
}

/// One connection: a non-blocking socket, optionally wrapped in TLS; every wait bounded.
class Conn {
 public:
  Conn(const Options& opt) : opt_(opt), end_(Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(opt.deadline_s))) {}
  ~Conn() {
    if (ssl_) SSL_free(ssl_);
    if (ctx_) SSL_CTX_free(ctx_);
    if (fd_ >= 0) close(fd_);
  }

  /// Looks `host` up within the probe's deadline: a numeric address at once, a name in a thread
  /// that is left behind (and cleans up after itself) when the resolver outlasts the deadline.
  addrinfo* Resolve(const std::string& host, const std::string& port, std::string* err) {
    addrinfo hints{}, *res = nullptr;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST;
    if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) == 0 && res) return res;
    struct Lookup {
      std::mutex m;
      std::condition_variable cv;
      bool done = false, abandoned = false;
      addrinfo* res = nullptr;
      int rc = 0;
    };
    auto st = std::make_shared<Lookup>();
    std::thread([st, host, port] {
      addrinfo h{}, *r = nullptr;
      h.ai_socktype = SOCK_STREAM;
      int rc = getaddrinfo(host.c_str(), port.c_str(), &h, &r);
      std::lock_guard<std::mutex> g(st->m);
      if (st->abandoned) {
        if (r) freeaddrinfo(r);
        return;
      }
      st->res = r;
      st->rc = rc;
      st->done = true;
      st->cv.notify_all();
    }).detach();
    std::unique_lock<std::mutex> lk(st->m);
    if (!st->cv.wait_until(lk, end_, [&] { return st->done; })) {
      st->abandoned = true;
      *err = "name lookup of " + host + " did not finish within the deadline (" +
             std::to_string(opt_.deadline_s).substr(0, 4) + " s)";
      return nullptr;
    }
    if (st->rc != 0 || !st->res) {
      if (st->res) freeaddrinfo(st->res);
      *err = "cannot resolve " + host + ": " + gai_strerror(st->rc);
      return nullptr;
    }
    return st->res;
  }

  /// "open", "closed" or "filtered"; *err set on local failures.
  std::string Connect(const std::string& host, uint16_t port, double* ms, std::string* err) {
    std::string p = std::to_string(port);
    addrinfo* res = Resolve(host, p, err);
    if (!res) return "filtered";
    fd_ = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd_ < 0) {
      freeaddrinfo(res);
      *err = std::string("socket: ") + std::strerror(errno);
      return "filtered";
    }
    if (!opt_.source.empty()) {
      addrinfo *src = nullptr, sh{};
      sh.ai_family = res->ai_family;
      sh.ai_flags = AI_NUMERICHOST;
      if (getaddrinfo(opt_.source.c_str(), nullptr, &sh, &src) != 0 || !src ||
          bind(fd_, src->ai_addr, src->ai_addrlen) != 0) {
        *err = "cannot bind the source address " + opt_.source;
        if (src) freeaddrinfo(src);
        freeaddrinfo(res);
        return "filtered";
      }
      freeaddrinfo(src);
    }
    auto start = Clock::now();
    int rc = connect(fd_, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    if (rc != 0 && errno != EINPROGRESS) return Refused(errno, err);
    pollfd pfd{fd_, POLLOUT, 0};
    int pr = poll(&pfd, 1, StepMs());
    *ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    if (pr == 0) return "filtered";
    int soerr = 0;
    socklen_t len = sizeof soerr;
    getsockopt(fd_, SOL_SOCKET, SO_ERROR, &soerr, &len);
    if (soerr != 0) return Refused(soerr, err);
    return "open";
  }

  /// Reads one line (without CRLF). False on timeout, EOF, reset, or an over-long line (the
  /// first kMaxLine bytes are kept).
  bool ReadLine(std::string* line, std::string* err) {
    line->clear();
    for (;;) {
      auto nl = buf_.find('\n');
      if (nl != std::string::npos) {
        *line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        if (!line->empty() && line->back() == '\r') line->pop_back();
        return true;
      }
      if (buf_.size() >= kMaxLine) {
        *line = buf_.substr(0, kMaxLine);
        *err = "a line longer than " + std::to_string(kMaxLine) + " bytes: stopped reading";
        return false;
      }
      char tmp[4096];
      ssize_t n = Recv(tmp, sizeof tmp, err);
      if (n <= 0) {
        if (n == 0 && err->empty()) *err = buf_.empty() ? "the server closed the connection" : "the server closed the connection mid-line";
        *line = buf_;
        return false;
      }
      buf_.append(tmp, static_cast<size_t>(n));
    }
  }

  bool Write(const std::string& s, std::string* err) {
    size_t off = 0;
    while (off < s.size()) {
      ssize_t n;
      if (ssl_) {
        n = SSL_write(ssl_, s.data() + off, static_cast<int>(s.size() - off));
        if (n <= 0) {
          int e = SSL_get_error(ssl_, static_cast<int>(n));
          if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) && Wait(e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, err)) continue;
          if (err->empty()) *err = "TLS write failed";
          return false;
        }
      } else {
        n = send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);
        if (n < 0) {
          if ((errno == EAGAIN || errno == EWOULDBLOCK) && Wait(POLLOUT, err)) continue;
          if (err->empty()) *err = std::string("write failed: ") + std::strerror(errno);
          return false;
        }
      }
      off += static_cast<size_t>(n);
    }
    return true;
  }

  /// TLS handshake on the open connection; fills *info.
  bool StartTls(const std::string& sni, TlsInfo* info, std::string* err) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    if (!ctx_) {
      *err = "OpenSSL: cannot create a context";
      return false;
    }
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_NONE, nullptr);  // we report the certificate, we do not trust it
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    if (!sni.empty() && sni.find_first_not_of("0123456789.:") != std::string::npos)
      SSL_set_tlsext_host_name(ssl_, sni.c_str());
    // Anything already read belongs to the cleartext phase (a server must not pipeline here).
    buf_.clear();
    for (;;) {
      int rc = SSL_connect(ssl_);
      if (rc == 1) break;
      int e = SSL_get_error(ssl_, rc);
      if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) && Wait(e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, err))
        continue;
      if (err->empty()) {
        unsigned long code = ERR_get_error();
        char msg[256] = "TLS handshake failed";
        if (code) ERR_error_string_n(code, msg, sizeof msg);
        *err = std::string("TLS handshake failed: ") + msg;
      } else {
        *err = "TLS handshake: " + *err;
      }
      return false;
    }
    info->version = SSL_get_version(ssl_);
    info->cipher = SSL_get_cipher_name(ssl_);
    if (X509* cert = SSL_get1_peer_certificate(ssl_)) {
      char name[512];
      X509_NAME_oneline(X509_get_subject_name(cert), name, sizeof name);
      info->subject = name;
      const ASN1_TIME* na = X509_get0_notAfter(cert);
      struct tm tm {};
      if (ASN1_TIME_to_tm(na, &tm) == 1) {
        char t[32];
        std::strftime(t, sizeof t, "%Y-%m-%dT%H:%M:%SZ", &tm);
        info->not_after = t;
      }
      // Whole days left, rounded down: expired six hours ago is -1, not 0 (ASN1_TIME_diff gives
      // days and seconds with the same sign, so days alone truncates towards zero).
      int days = 0, secs = 0;
      if (ASN1_TIME_diff(&days, &secs, nullptr, na) == 1) {
        long long total = static_cast<long long>(days) * 86400 + secs;
        info->days_left = static_cast<long>(total >= 0 ? total / 86400 : -((-total + 86399) / 86400));
      }
      X509_free(cert);
    }
    return true;
  }

 private:
  std::string Refused(int e, std::string* err) {
    if (e == ECONNREFUSED) return "closed";
    // A reset is only possible once the handshake completed (a refusal in SYN_SENT reads
    // ECONNREFUSED): the server accepted, then reset before we looked. The port is open.
    if (e == ECONNRESET) {
      *err = "connection reset by the server";
      return "open";
    }
    if (e == EHOSTUNREACH || e == ENETUNREACH || e == ETIMEDOUT) return "filtered";
    *err = std::strerror(e);
    return "filtered";
  }
  int StepMs() const {
    auto left = std::chrono::duration<double, std::milli>(end_ - Clock::now()).count();
    double step = std::min(opt_.timeout_s * 1000, left);
    return step > 0 ? static_cast<int>(step) : 0;
  }
  bool Wait(short events, std::string* err) {
    pollfd pfd{fd_, events, 0};
    int ms = StepMs();
    if (ms <= 0 || poll(&pfd, 1, ms) <= 0) {
      *err = "no answer within the timeout";
      return false;
    }
    return true;
  }
  ssize_t Recv(char* p, size_t n, std::string* err) {
    for (;;) {
      if (ssl_) {
        int r = SSL_read(ssl_, p, static_cast<int>(n));
        if (r > 0) return r;
        int e = SSL_get_error(ssl_, r);
        if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) && Wait(e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, err)) continue;
        if (e == SSL_ERROR_ZERO_RETURN) return 0;
        if (err->empty()) *err = e == SSL_ERROR_SYSCALL && errno == ECONNRESET ? "connection reset by the server" : "TLS read failed";
        return -1;
      }
      ssize_t r = recv(fd_, p, n, 0);
      if (r >= 0) return r;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (Wait(POLLIN, err)) continue;
        return -1;
      }
      if (errno == EINTR) continue;
      *err = errno == ECONNRESET ? "connection reset by the server" : std::string("read failed: ") + std::strerror(errno);
      return -1;
    }
  }

  Options opt_;
  Clock::time_point end_;
  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  std::string buf_;
};

/// The TLS handshake (implicit, or after STARTTLS/STLS); false with r.error set on failure.
bool Handshake(Conn& c, Result& r) {
  TlsInfo t;
  std::string err;
  if (!c.StartTls(r.host, &t, &err)) {
    r.error = err;
    return false;
  }
  r.tls = t;
  return true;
}

std::string Clip(const std::string& s) { return s.size() > 200 ? s.substr(0, 200) + "..." : s; }

/// A one-line upgrade command (IMAP STARTTLS, POP3 STLS): send it, expect `ok`, then the
/// handshake. False with r.error set on failure.
bool Upgrade(Conn& c, Result& r, const std::string& command, const char* ok) {
  std::string line, err;
  if (!c.Write(command + "\r\n", &err) || !c.ReadLine(&line, &err)) {
    r.error = err;
    return false;
  }
  if (line.rfind(ok, 0) != 0) {
    r.error = command.substr(command.find(' ') + 1) + " refused: " + Clip(line);
    return false;
  }
  return Handshake(c, r);
}

/// SASL mechanisms that carry the password itself (CRAM-MD5, DIGEST-MD5, SCRAM-* do not).
bool PasswordMechanism(const std::string& mech) {
  std::string u = Upper(mech);
  return u == "PLAIN" || u == "LOGIN";
}

/// Starts a SASL exchange for `mech` with `command` and cancels it at once with "*": a "+"
/// continuation means the server would take a password now. No credentials are sent.
/// Returns the server's first answer.
std::string TrySasl(Conn& c, const std::string& command, bool* accepted, std::string* err) {
  std::string line;
  *accepted = false;
  if (!c.Write(command + "\r\n", err) || !c.ReadLine(&line, err)) return line;
  if (line.rfind("+", 0) == 0 && line.rfind("+OK", 0) != 0) {
    *accepted = true;
    std::string end;
    if (c.Write("*\r\n", err)) c.ReadLine(&end, err);  // "-ERR Authentication aborted" / "a NO ..."
  }
  return line;
}

void Imap(Conn& c, Result& r, bool implicit_tls) {
  std::string line, err;
  if (implicit_tls && !Handshake(c, r)) return;
  if (!c.ReadLine(&line, &err)) {
    r.greeting = Clip(line);
    r.error = err.empty() ? "no IMAP greeting" : "no IMAP greeting: " + err;
    return;
  }
  r.greeting = Clip(line);
  if (line.rfind("* OK", 0) != 0 && line.rfind("* PREAUTH", 0) != 0) {
    r.error = "not an IMAP greeting";
    return;
  }
  if (!c.Write("a1 CAPABILITY\r\n", &err)) {
    r.error = err;
    return;
  }
  for (int i = 0; i < kMaxLines && c.ReadLine(&line, &err); ++i) {
    if (line.rfind("* CAPABILITY", 0) == 0) r.capabilities = ParseImapCapabilityLine(line);
    if (line.rfind("a1 ", 0) == 0) break;
  }
  if (!err.empty()) {
    r.error = err;
    return;
  }
  if (!implicit_tls) {
    for (const auto& cap : r.capabilities) {
      std::string u = Upper(cap);
      if (u == "STARTTLS") r.starttls = true;
      if (u == "LOGINDISABLED") r.login_disabled = true;
      if (u.rfind("AUTH=", 0) == 0) r.auth_cleartext.push_back(cap.substr(5));
    }
    // A password can cross when LOGIN is not disabled (RFC 3501: LOGINDISABLED says it is), or
    // when a password mechanism is accepted before TLS.
    if (!r.login_disabled) {
      r.cleartext_login = true;
      r.cleartext_evidence = "no LOGINDISABLED: LOGIN is allowed before TLS";
    } else {
      int n = 0;
      for (const auto& mech : r.auth_cleartext) {
        if (!PasswordMechanism(mech)) continue;
        bool accepted = false;
        std::string tag = "s" + std::to_string(++n);
        std::string answer = TrySasl(c, tag + " AUTHENTICATE " + Upper(mech), &accepted, &err);
        if (!err.empty()) {
          r.error = err;
          return;
        }
        if (accepted) {
          r.cleartext_login = true;
          r.cleartext_evidence = "AUTHENTICATE " + Upper(mech) + " accepted before TLS";
          break;
        }
        r.cleartext_evidence = "AUTHENTICATE " + Upper(mech) + " refused before TLS: " + Clip(answer);
      }
      if (r.cleartext_evidence.empty()) r.cleartext_evidence = "LOGINDISABLED and no password mechanism before TLS";
    }
    if (r.starttls && !Upgrade(c, r, "a2 STARTTLS", "a2 OK")) return;
  }
  c.Write("a9 LOGOUT\r\n", &err);
}

void Pop3(Conn& c, Result& r, bool implicit_tls) {
  std::string line, err;
  if (implicit_tls && !Handshake(c, r)) return;
  if (!c.ReadLine(&line, &err)) {
    r.greeting = Clip(line);
    r.error = err.empty() ? "no POP3 greeting" : "no POP3 greeting: " + err;
    return;
  }
  r.greeting = Clip(line);
  if (line.rfind("+OK", 0) != 0) {
    r.error = "not a POP3 greeting";
    return;
  }
  if (!c.Write("CAPA\r\n", &err) || !c.ReadLine(&line, &err)) {
    r.error = err;
    return;
  }
  if (line.rfind("+OK", 0) == 0) {
    for (int i = 0; i < kMaxLines && c.ReadLine(&line, &err) && line != "."; ++i) r.capabilities.push_back(line);
  }
  if (!implicit_tls) {
    bool user = false;
    for (const auto& cap : r.capabilities) {
      std::string u = Upper(cap);
      if (u == "STLS") r.starttls = true;
      if (u == "USER") user = true;
      if (u.rfind("SASL", 0) == 0) {
        auto words = SplitWords(cap);
        for (size_t i = 1; i < words.size(); ++i) r.auth_cleartext.push_back(words[i]);
      }
    }
    // Decided the way a client finds out, without a password: USER with a made-up name (Dovecot
    // with ssl = required advertises USER but answers "-ERR [AUTH] Plaintext authentication
    // disallowed"), then each password mechanism started and cancelled.
    if (user) {
      if (!c.Write("USER mailward-probe\r\n", &err) || !c.ReadLine(&line, &err)) {
        r.error = err;
        return;
      }
      if (line.rfind("+OK", 0) == 0) {
        r.cleartext_login = true;
        r.cleartext_evidence = "USER accepted before TLS: PASS would follow in cleartext";
      } else {
        r.cleartext_evidence = "USER refused before TLS: " + Clip(line);
      }
    }
    for (const auto& mech : r.auth_cleartext) {
      if (r.cleartext_login || !PasswordMechanism(mech)) continue;
      bool accepted = false;
      std::string answer = TrySasl(c, "AUTH " + Upper(mech), &accepted, &err);
      if (!err.empty()) {
        r.error = err;
        return;
      }
      if (accepted) {
        r.cleartext_login = true;
        r.cleartext_evidence = "AUTH " + Upper(mech) + " accepted before TLS";
      } else {
        r.cleartext_evidence += std::string(r.cleartext_evidence.empty() ? "" : "; ") + "AUTH " + Upper(mech) +
                                " refused before TLS: " + Clip(answer);
      }
    }
    if (r.cleartext_evidence.empty()) r.cleartext_evidence = "no USER and no password mechanism before TLS";
    if (r.starttls && !Upgrade(c, r, "STLS", "+OK")) return;
  }
  c.Write("QUIT\r\n", &err);
}

/// Reads a multi-line SMTP reply ("250-..." ... "250 ...").
bool SmtpReply(Conn& c, std::vector<std::string>* lines, std::string* err) {
  std::string line;
  for (int i = 0; i < kMaxLines; ++i) {
    if (!c.ReadLine(&line, err)) return false;
    lines->push_back(line);
    if (line.size() < 4 || line[3] != '-') return true;
  }
  *err = "an SMTP reply of more than 200 lines";
  return false;
}

void Smtp(Conn& c, Result& r, bool implicit_tls) {
  std::string err;
  std::vector<std::string> lines;
  if (implicit_tls && !Handshake(c, r)) return;
  if (!SmtpReply(c, &lines, &err)) {
    r.greeting = lines.empty() ? "" : Clip(lines[0]);
    r.error = err.empty() ? "no SMTP greeting" : "no SMTP greeting: " + err;
    return;
  }
  r.greeting = Clip(lines[0]);
  if (lines[0].rfind("220", 0) != 0) {
    r.error = "not an SMTP greeting";
    return;
  }
  lines.clear();
  if (!c.Write("EHLO mailward.invalid\r\n", &err) || !SmtpReply(c, &lines, &err)) {
    r.error = err;
    return;
  }
  for (size_t i = 1; i < lines.size(); ++i) r.capabilities.push_back(lines[i].size() > 4 ? lines[i].substr(4) : "");
  if (!implicit_tls) {
    for (const auto& cap : r.capabilities) {
      std::string u = Upper(cap);
      if (u == "STARTTLS") r.starttls = true;
      if (u.rfind("AUTH", 0) == 0) {
        auto words = SplitWords(cap);
        for (size_t i = 1; i < words.size(); ++i) r.auth_cleartext.push_back(words[i]);
      }
    }
    r.cleartext_login = !r.auth_cleartext.empty();
    if (r.starttls) {
      lines.clear();
      if (!c.Write("STARTTLS\r\n", &err) || !SmtpReply(c, &lines, &err)) {
        r.error = err;
        return;
      }
      if (lines.back().rfind("220", 0) != 0) {
        r.error = "STARTTLS refused: " + Clip(lines.back());
        return;
      }
      if (!Handshake(c, r)) return;
    }
  }
  c.Write("QUIT\r\n", &err);
}

}  // namespace

Proto ProtoForPort(uint16_t port) {
  switch (port) {
    case 143: return Proto::kImap;
    case 993: return Proto::kImaps;
    case 110: return Proto::kPop3;
    case 995: return Proto::kPop3s;
    case 25: case 587: return Proto::kSmtp;
    case 465: return Proto::kSmtps;
    default: return Proto::kTcp;
  }
}

const char* ProtoName(Proto p) {
  switch (p) {
    case Proto::kTcp: return "tcp";
    case Proto::kImap: return "imap";
    case Proto::kImaps: return "imaps";
    case Proto::kPop3: return "pop3";
    case Proto::kPop3s: return "pop3s";
    case Proto::kSmtp: return "smtp";
    case Proto::kSmtps: return "smtps";
  }
  return "?";
}

std::vector<std::string> ParseImapCapabilityLine(const std::string& line) {
  auto words = SplitWords(line);
  if (words.size() < 2) return {};
  return std::vector<std::string>(words.begin() + 2, words.end());
}

Result ProbeOne(const std::string& host, uint16_t port, const Options& opt) {
  Result r;
  r.host = host;
  r.port = port;
  r.proto = opt.proto ? *opt.proto : ProtoForPort(port);
  Conn c(opt);
  std::string err;
  r.state = c.Connect(host, port, &r.connect_ms, &err);
  r.error = err;
  if (r.state != "open" || !err.empty()) return r;
  switch (r.proto) {
    case Proto::kImap: Imap(c, r, false); break;
    case Proto::kImaps: Imap(c, r, true); break;
    case Proto::kPop3: Pop3(c, r, false); break;
    case Proto::kPop3s: Pop3(c, r, true); break;
    case Proto::kSmtp: Smtp(c, r, false); break;
    case Proto::kSmtps: Smtp(c, r, true); break;
    case Proto::kTcp: break;
  }
  return r;
}

std::vector<Result> ProbeAll(const std::vector<std::pair<std::string, uint16_t>>& targets, const Options& opt) {
  std::vector<Result> out(targets.size());
  std::vector<std::thread> threads;
  threads.reserve(targets.size());
  for (size_t i = 0; i < targets.size(); ++i)
    threads.emplace_back([&, i] { out[i] = ProbeOne(targets[i].first, targets[i].second, opt); });
  for (auto& t : threads) t.join();
  return out;
}

std::vector<std::string> LocalAddresses() {
  std::vector<std::string> out;
  ifaddrs* ifa = nullptr;
  if (getifaddrs(&ifa) != 0) return {"127.0.0.1"};
  for (ifaddrs* i = ifa; i; i = i->ifa_next) {
    if (!i->ifa_addr) continue;
    char buf[INET6_ADDRSTRLEN];
    if (i->ifa_addr->sa_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, buf, sizeof buf);
    } else if (i->ifa_addr->sa_family == AF_INET6) {
      auto* a6 = &reinterpret_cast<sockaddr_in6*>(i->ifa_addr)->sin6_addr;
      if (IN6_IS_ADDR_LINKLOCAL(a6)) continue;
      inet_ntop(AF_INET6, a6, buf, sizeof buf);
    } else {
      continue;
    }
    if (std::find(out.begin(), out.end(), buf) == out.end()) out.push_back(buf);
  }
  freeifaddrs(ifa);
  if (out.empty()) out.push_back("127.0.0.1");
  return out;
}

bool IsLocal(const std::string& host) {
  if (host == "localhost") return true;
  in6_addr a6;
  in_addr a4;
  if (inet_pton(AF_INET, host.c_str(), &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127) return true;
  if (inet_pton(AF_INET6, host.c_str(), &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6)) return true;
  auto local = LocalAddresses();
  return std::find(local.begin(), local.end(), host) != local.end();
}

}  // namespace mw::probe
