// ProbeOne/ProbeAll against real servers inside the test process: each listens on an ephemeral
// port of 127.0.0.1, serves one connection from a script (greeting, capabilities, STARTTLS, a
// TLS handshake with a certificate made here, a stall, a huge line, a reset).
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "probe/probe.h"

namespace mw {
namespace {

using probe::Proto;

/// A self-signed certificate for CN=mail.test valid from `from_s` to `to_s` seconds from now.
struct Cert {
  EVP_PKEY* key = nullptr;
  X509* x509 = nullptr;
  Cert(long from_s, long to_s) {
    key = EVP_EC_gen("P-256");
    x509 = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(x509), 1);
    X509_gmtime_adj(X509_getm_notBefore(x509), from_s);
    X509_gmtime_adj(X509_getm_notAfter(x509), to_s);
    X509_set_pubkey(x509, key);
    X509_NAME* name = X509_get_subject_name(x509);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("mail.test"), -1, -1, 0);
    X509_set_issuer_name(x509, name);
    X509_sign(x509, key, EVP_sha256());
  }
  ~Cert() {
    X509_free(x509);
    EVP_PKEY_free(key);
  }
};

/// The server side of one connection: blocking I/O (every read bounded by SO_RCVTIMEO), TLS on demand.
class Peer {
 public:
  explicit Peer(int fd) : fd_(fd) {
    timeval tv{10, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  ~Peer() {
    if (ssl_) SSL_free(ssl_);
    if (ctx_) SSL_CTX_free(ctx_);
    if (fd_ >= 0) close(fd_);
  }
  void Send(const std::string& s) {
    if (ssl_) SSL_write(ssl_, s.data(), static_cast<int>(s.size()));
    else send(fd_, s.data(), s.size(), MSG_NOSIGNAL);
  }
  /// One line without CRLF; "" at EOF.
  std::string Line() {
    for (;;) {
      auto nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string l = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        if (!l.empty() && l.back() == '\r') l.pop_back();
        return l;
      }
      char tmp[1024];
      int n = ssl_ ? SSL_read(ssl_, tmp, sizeof tmp) : static_cast<int>(recv(fd_, tmp, sizeof tmp, 0));
      if (n <= 0) {
        eof_ = true;
        return "";
      }
      buf_.append(tmp, static_cast<size_t>(n));
    }
  }
  /// Expects the client's next line to be `want` (recorded for the test to check).
  void Expect(const std::string& want) {
    std::string got = Line();
    if (got != want) mismatches += "want '" + want + "' got '" + got + "'; ";
  }
  bool Tls(const Cert& cert) {
    ctx_ = SSL_CTX_new(TLS_server_method());
    SSL_CTX_use_certificate(ctx_, cert.x509);
    SSL_CTX_use_PrivateKey(ctx_, cert.key);
    SSL_CTX_set_num_tickets(ctx_, 0);  // nothing written after the handshake the client may not read
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    return SSL_accept(ssl_) == 1;
  }
  /// Reads until the client closes (or 10 s), so the client decides when the dialogue ends.
  void Drain() {
    while (!eof_) Line();
  }
  /// Resets the connection (RST instead of FIN).
  void Reset() {
    linger l{1, 0};
    setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close(fd_);
    fd_ = -1;
  }
  std::string mismatches;

 private:
  int fd_;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  std::string buf_;
  bool eof_ = false;
};

/// Listens on 127.0.0.1:<ephemeral>, serves `n` connections with `script`, one after another.
class Server {
 public:
  explicit Server(std::function<void(Peer&)> script, int n = 1) {
    // As main() does: a write to a closed peer is EPIPE, not the end of the process.
    static const bool sigpipe_ignored = (signal(SIGPIPE, SIG_IGN), true);
    (void)sigpipe_ignored;
    lfd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(listen(lfd_, 8), 0);
    socklen_t len = sizeof a;
    getsockname(lfd_, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
    thread_ = std::thread([this, script, n] {
      for (int i = 0; i < n; ++i) {
        pollfd p{lfd_, POLLIN, 0};
        if (poll(&p, 1, 20000) <= 0) return;  // the client never came: the test fails on its own
        int fd = accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) return;
        Peer peer(fd);
        script(peer);
        mismatches += peer.mismatches;
      }
    });
  }
  ~Server() { Join(); }
  void Join() {
    if (thread_.joinable()) thread_.join();
    if (lfd_ >= 0) close(lfd_);
    lfd_ = -1;
  }
  uint16_t port = 0;
  std::string mismatches;  ///< read after Join()

 private:
  int lfd_ = -1;
  std::thread thread_;
};

probe::Options As(Proto p, double timeout_s = 5) {
  probe::Options o;
  o.proto = p;
  o.timeout_s = timeout_s;
  o.deadline_s = 20;
  return o;
}

bool Has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

const Cert& ValidCert() {
  static Cert c(-3600, 30L * 86400 + 3600);  // 30 whole days left
  return c;
}
const Cert& ExpiredCert() {
  static Cert c(-30L * 86400, -2L * 86400 + 3600);  // expired 47 h ago: -2 days
  return c;
}

TEST(ProbeServer, ImapStartTlsWithoutLoginDisabledLetsAPasswordCrossInCleartext) {
  Server s([](Peer& p) {
    p.Send("* OK [CAPABILITY IMAP4rev1] mail.test ready\r\n");
    p.Expect("a1 CAPABILITY");
    p.Send("* CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN AUTH=CRAM-MD5\r\na1 OK done\r\n");
    p.Expect("a2 STARTTLS");
    p.Send("a2 OK Begin TLS\r\n");
    if (p.Tls(ValidCert())) p.Expect("a9 LOGOUT");
  });
  auto r = probe::ProbeOne("127.0.0.1", s.port, As(Proto::kImap));
  s.Join();
  EXPECT_EQ(s.mismatches, "");
  EXPECT_EQ(r.state, "open");
  EXPECT_EQ(r.proto, Proto::kImap);
  EXPECT_EQ(r.greeting, "* OK [CAPABILITY IMAP4rev1] mail.test ready");
  EXPECT_EQ(r.capabilities, (std::vector<std::string>{"IMAP4rev1", "STARTTLS", "AUTH=PLAIN", "AUTH=CRAM-MD5"}));
  EXPECT_TRUE(r.starttls);
  EXPECT_FALSE(r.login_disabled);
  EXPECT_EQ(r.auth_cleartext, (std::vector<std::string>{"PLAIN", "CRAM-MD5"}));
  EXPECT_TRUE(r.cleartext_login);
  EXPECT_TRUE(Has(r.cleartext_evidence, "no LOGINDISABLED")) << r.cleartext_evidence;
  ASSERT_TRUE(r.tls.has_value()) << r.error;
  EXPECT_EQ(r.tls->version, "TLSv1.3");
  EXPECT_TRUE(Has(r.tls->subject, "CN=mail.test")) << r.tls->subject;
  EXPECT_EQ(r.tls->days_left, 30);
  EXPECT_EQ(r.error, "");
}

TEST(ProbeServer, ImapLoginDisabledButAuthenticatePlainAcceptedIsCleartextLogin) {
  Server s([](Peer& p) {
    p.Send("* OK ready\r\n");
    p.Expect("a1 CAPABILITY");
    p.Send("* CAPABILITY IMAP4rev1 LOGINDISABLED AUTH=CRAM-MD5 AUTH=PLAIN\r\na1 OK done\r\n");
    p.Expect("s1 AUTHENTICATE PLAIN");  // CRAM-MD5 carries no password: not tried
    p.Send("+ \r\n");
    p.Expect("*");  // cancelled: no credentials sent
    p.Send("s1 BAD Authentication aborted\r\n");
    p.Expect("a9 LOGOUT");
  });
  auto r = probe::ProbeOne("127.0.0.1", s.port, As(Proto::kImap));
  s.Join();
  EXPECT_EQ(s.mismatches, "");
  EXPECT_TRUE(r.login_disabled);
  EXPECT_FALSE(r.starttls);
  EXPECT_TRUE(r.cleartext_login);
  EXPECT_EQ(r.cleartext_evidence, "AUTHENTICATE PLAIN accepted before TLS");
  EXPECT_FALSE(r.tls.has_value());
  EXPECT_EQ(r.error, "");
}

TEST(ProbeServer, ImapLoginDisabledAndMechanismRefusedThenStartTlsRefused) {
  Server s([](Peer& p) {
    p.Send("* OK ready\r\n");
    p.Expect("a1 CAPABILITY");
    p.Send("* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED AUTH=LOGIN\r\na1 OK done\r\n");
    p.Expect("s1 AUTHENTICATE LOGIN");
    p.Send("s1 NO [PRIVACYREQUIRED] Plaintext authentication disallowed\r\n");
    p.Expect("a2 STARTTLS");
    p.Send("a2 NO TLS unavailable\r\n");
    p.Drain();
  });
  auto r = probe::ProbeOne("127.0.0.1", s.port, As(Proto::kImap));
  s.Join();
  EXPECT_EQ(s.mismatches, "");
  EXPECT_FALSE(r.cleartext_login);
  EXPECT_EQ(r.cleartext_evidence,
            "AUTHENTICATE LOGIN refused before TLS: s1 NO [PRIVACYREQUIRED] Plaintext authentication disallowed");
  EXPECT_TRUE(r.starttls);
  EXPECT_FALSE(r.tls.has_value());
  EXPECT_EQ(r.error, "STARTTLS refused: a2 NO TLS unavailable");
}

TEST(ProbeServer, ImapLoginDisabledWithoutPasswordMechanism) {
  Server s([](Peer& p) {
    p.Send("* PREAUTH welcome\r\n");
    p.Expect("a1 CAPABILITY");
    p.Send("* CAPABILITY IMAP4rev1 LOGINDISABLED AUTH=SCRAM-SHA-256\r\na1 OK done\r\n");
    p.Drain();
  });
  auto r = probe::ProbeOne("127.0.0.1", s.port, As(Proto::kImap));
  s.Join();
  EXPECT_FALSE(r.cleartext_login);
  EXPECT_EQ(r.cleartext_evidence, "LOGINDISABLED and no password mechanism before TLS");
  EXPECT_EQ(r.error, "");
}

TEST(ProbeServer, ImapsImplicitTlsWithAnExpiredCertificate) {
  Server s([](Peer& p) {
    if (!p.Tls(ExpiredCert())) return;
    p.Send("* OK ready\r\n");
    p.Expect("a1 CAPABILITY");
    p.Send("* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\na1 OK done\r\n");
    p.Expect("a9 LOGOUT");
  });
  auto r = probe::ProbeOne("127.0.0.1", s.port, As(Proto::kImaps));
  s.Join();
  EXPECT_EQ(s.mismatches, "");
  ASSERT_TRUE(r.tls.has_value()) << r.error;
  EXPECT_EQ(r.tls->days_left, -2);  // 47 hours ago rounds down to two days
  EXPECT_EQ(r.tls->not_after.size(), 20u) << r.tls->not_after;
  EXPECT_EQ(r.tls->not_after.back(), 'Z');
  EXPECT_FALSE(r.tls->cipher.empty());
  EXPECT_EQ(r.greeting, "* OK ready");
  EXPECT_EQ(r.capabilities, (std::vector<std::string>{"IMAP4rev1", "AUTH=PLAIN"}));
  // Over TLS nothing is cleartext.
  EXPECT_FALSE(r.cleartext_login);
  EXPECT_TRUE(r.auth_cleartext.empty());
  EXPECT_EQ(r.error, "");
}

TEST(ProbeServer, ImplicitTlsPortSpeakingPlaintextFailsTheHandshake) {
  Server s([](Peer& p) {
    p.Send("* OK this is not TLS\r\n");
    p.Drain();
  });
  auto r = probe::ProbeOne("127.0.0.1", s.port, As(Proto::kImaps));
  s.Join();
  EXPECT_EQ(r.state, "open");
  EXPECT_FALSE(r.tls.has_value());
  EXPECT_TRUE(Has(r.error, "TLS handshake failed")) << r.error;
}

TEST(ProbeServer, NotAnImapGreeting) {
  Server s([](Peer& p) {
    p.Send("SSH-2.0-OpenSSH_9.2\r\n");
    p.Drain();
  });
  auto r = probe::ProbeOne("127.0.0.1", s.port, As(Proto::kImap));
  s.Join();
  EXPECT_EQ(r.greeting, "SSH-2.0-OpenSSH_9.2");
  EXPECT_EQ(r.error, "not an IMAP greeting");
}

TEST(ProbeServer, AStalledServerTimesOutWithoutAGreeting) {
  Server s([](Peer& p) { p.Drain(); });
  auto r = probe::ProbeOne("127.0.0.1", s.port, As(Proto::kImap, 0.3));
  s.Join();
  EXPECT_EQ(r.state, "open");
  EXPECT_EQ(r.greeting, "");
  EXPECT_EQ(r.error, "no IMAP greeting: no answer within the timeout");
}

TEST(ProbeServer, AHugeGreetingIsCutAndReadingStops) {
  Server s([](Peer& p) {
    p.Send("* OK " + std::string(20000, 'A'));  // no end of line, ever
    p.Drain();
  });
  auto r = probe::ProbeOne("127.0.0.1", s.port, As(Proto::kImap));
  s.Join();
  EXPECT_EQ(r.greeting.size(), 203u);  // 200 characters and "..."
  EXPECT_EQ(r.greeting.substr(0, 7), "* OK AA");
  EXPECT_EQ(r.error, "no IMAP greeting: a line longer than 8192 bytes: stopped reading");
}

TEST(ProbeServer, AResetIsAnOpenPortWithAnError) {
  Server s([](Peer& p) { p.Reset(); });
  auto r = probe::ProbeOne("127.0.0.1", s.port, As(Proto::kPop3));
  s.Join();
  EXPECT_EQ(r.state, "open");
  EXPECT_TRUE(Has(r.error, "connection reset by the server")) << r.error;
  EXPECT_EQ(r.greeting, "");
}

TEST(ProbeServer, AClosedConnectionMidLine) {
  Server s([](Peer& p) { p.Send("+OK half a gree"); });
  auto r = probe::ProbeOne("127.0.0.1", s.port, As(Proto::kPop3));
  s.Join();
  EXPECT_EQ(r.greeting, "+OK half a gree");
  EXPECT_EQ(r.error, "no POP3 greeting: the server closed the connection mid-line");
}

TEST(ProbeServer, Pop3UserAcceptedBeforeTlsThenStls) {
  Server s([](Peer& p) {
    p.Send("+OK POP3 ready\r\n");
    p.Expect("CAPA");
    p.Send("+OK\r\nTOP\r\nUSER\r\nSASL PLAIN LOGIN\r\nSTLS\r\n.\r\n");
    p.Expect("USER mailward-probe");
    p.Send("+OK\r\n");
    p.Expect("STLS");  // USER already decided it: no SASL tried
    p.Send("+OK Begin TLS\r\n");
    if (p.Tls(ValidCert())) p.Expect("QUIT");
  });
  auto r = probe::ProbeOne("127.0.0.1", s.port, As(Proto::kPop3));
  s.Join();
  EXPECT_EQ(s.mismatches, "");
  EXPECT_EQ(r.capabilities, (std::vector<std::string>{"TOP", "USER", "SASL PLAIN LOGIN", "STLS"}));
  EXPECT_TRUE(r.starttls);
  EXPECT_EQ(r.auth_cleartext, (std::vector<std::string>{"PLAIN", "LOGIN"}));
  EXPECT_TRUE(r.cleartext_login);
  EXPECT_EQ(r.cleartext_evidence, "USER accepted before TLS: PASS would follow in cleartext");
  ASSERT_TRUE(r.tls.has_value()) << r.error;
  EXPECT_EQ(r.tls->days_left, 30);
  EXPECT_EQ(r.error, "");
}

TEST(ProbeServer, Pop3UserRefusedButSaslPlainAccepted) {
  Server s([](Peer& p) {
    p.Send("+OK POP3 ready\r\n");
    p.Expect("CAPA");
    p.Send("+OK\r\nUSER\r\nSASL CRAM-MD5 LOGIN PLAIN\r\n.\r\n");
    p.Expect("USER mailward-probe");
    p.Send("-ERR [AUTH] Plaintext authentication disallowed\r\n");
    p.Expect("AUTH LOGIN");
    p.Send("-ERR no\r\n");
    p.Expect("AUTH PLAIN");
    p.Send("+ \r\n");
    p.Expect("*");
    p.Send("-ERR Authentication aborted\r\n");
    p.Expect("QUIT");
  });
  auto r = probe::ProbeOne("127.0.0.1", s.port, As(Proto::kPop3));
  s.Join();
  EXPECT_EQ(s.mismatches, "");
  EXPECT_FALSE(r.starttls);
  EXPECT_TRUE(r.cleartext_login);
  EXPECT_EQ(r.cleartext_evidence, "AUTH PLAIN accepted before TLS");
  EXPECT_EQ(r.error, "");
}

TEST(ProbeServer, Pop3NothingCrossesInCleartextAndStlsRefused) {
  Server s([](Peer& p) {
    p.Send("+OK POP3 ready\r\n");
    p.Expect("CAPA");
    p.Send("+OK\r\nUSER\r\nSASL PLAIN\r\nSTLS\r\n.\r\n");
    p.Expect("USER mailward-probe");
    p.Send("-ERR [AUTH] Plaintext authentication disallowed\r\n");
    p.Expect("AUTH PLAIN");
    p.Send("-ERR [AUTH] Plaintext authentication disallowed\r\n");
    p.Expect("STLS");
    p.Send("-ERR not now\r\n");
    p.Drain();
  });
  auto r = probe::ProbeOne("127.0.0.1", s.port, As(Proto::kPop3));
  s.Join();
  EXPECT_EQ(s.mismatches, "");
  EXPECT_FALSE(r.cleartext_login);
  EXPECT_EQ(r.cleartext_evidence,
            "USER refused before TLS: -ERR [AUTH] Plaintext authentication disallowed; "
            "AUTH PLAIN refused before TLS: -ERR [AUTH] Plaintext authentication disallowed");
  EXPECT_EQ(r.error, "STLS refused: -ERR not now");
}

TEST(ProbeServer, Pop3WithoutCapaAndNotAGreeting) {
  Server s([](Peer& p) {
    p.Send("+OK ready\r\n");
    p.Expect("CAPA");
    p.Send("-ERR unknown command\r\n");
    p.Expect("QUIT");
  });
  auto r = probe::ProbeOne("127.0.0.1", s.port, As(Proto::kPop3));
  s.Join();
  EXPECT_TRUE(r.capabilities.empty());
  EXPECT_FALSE(r.cleartext_login);
  EXPECT_EQ(r.cleartext_evidence, "no USER and no password mechanism before TLS");

  Server bad([](Peer& p) {
    p.Send("220 smtp here\r\n");
    p.Drain();
  });
  auto b = probe::ProbeOne("127.0.0.1", bad.port, As(Proto::kPop3));
  bad.Join();
  EXPECT_EQ(b.error, "not a POP3 greeting");
}

TEST(ProbeServer, Pop3sImplicitTls) {
  Server s([](Peer& p) {
    if (!p.Tls(ValidCert())) return;
    p.Send("+OK ready\r\n");
    p.Expect("CAPA");
    p.Send("+OK\r\nUSER\r\n.\r\n");
    p.Expect("QUIT");  // over TLS, USER is no cleartext risk: not tried
  });
  auto r = probe::ProbeOne("127.0.0.1", s.port, As(Proto::kPop3s));
  s.Join();
  EXPECT_EQ(s.mismatches, "");
  ASSERT_TRUE(r.tls.has_value()) << r.error;
  EXPECT_EQ(r.capabilities, (std::vector<std::string>{"USER"}));
  EXPECT_FALSE(r.cleartext_login);
}

TEST(ProbeServer, SmtpEhloStartTlsAndAuthBeforeTls) {
  Server s([](Peer& p) {
    p.Send("220-mail.test ESMTP\r\n220 second greeting line\r\n");
    p.Expect("EHLO mailward.invalid");
    p.Send("250-mail.test\r\n250-PIPELINING\r\n250-AUTH PLAIN LOGIN\r\n250-STARTTLS\r\n250 8BITMIME\r\n");
    p.Expect("STARTTLS");
    p.Send("220 2.0.0 Ready to start TLS\r\n");
    if (p.Tls(ValidCert())) p.Expect("QUIT");
  });
  auto r = probe::ProbeOne("127.0.0.1", s.port, As(Proto::kSmtp));
  s.Join();
  EXPECT_EQ(s.mismatches, "");
  EXPECT_EQ(r.greeting, "220-mail.test ESMTP");
  EXPECT_EQ(r.capabilities, (std::vector<std::string>{"PIPELINING", "AUTH PLAIN LOGIN", "STARTTLS", "8BITMIME"}));
  EXPECT_TRUE(r.starttls);
  EXPECT_EQ(r.auth_cleartext, (std::vector<std::string>{"PLAIN", "LOGIN"}));
  EXPECT_TRUE(r.cleartext_login);
  ASSERT_TRUE(r.tls.has_value()) << r.error;
  EXPECT_EQ(r.error, "");
}

TEST(ProbeServer, SmtpStartTlsRefusedAndNotAGreeting) {
  Server s([](Peer& p) {
    p.Send("220 mail.test ESMTP\r\n");
    p.Expect("EHLO mailward.invalid");
    p.Send("250-mail.test\r\n250 STARTTLS\r\n");
    p.Expect("STARTTLS");
    p.Send("454 4.7.0 TLS not available\r\n");
    p.Drain();
  });
  auto r = probe::ProbeOne("127.0.0.1", s.port, As(Proto::kSmtp));
  s.Join();
  EXPECT_EQ(s.mismatches, "");
  EXPECT_FALSE(r.cleartext_login);  // no AUTH offered
  EXPECT_EQ(r.error, "STARTTLS refused: 454 4.7.0 TLS not available");

  Server busy([](Peer& p) { p.Send("554 no service\r\n"); });
  auto b = probe::ProbeOne("127.0.0.1", busy.port, As(Proto::kSmtp));
  busy.Join();
  EXPECT_EQ(b.greeting, "554 no service");
  EXPECT_EQ(b.error, "not an SMTP greeting");

  Server silent([](Peer&) {});
  auto c = probe::ProbeOne("127.0.0.1", silent.port, As(Proto::kSmtp));
  silent.Join();
  EXPECT_EQ(c.error, "no SMTP greeting: the server closed the connection");
}

TEST(ProbeServer, SmtpReplyOfEndlessContinuationLinesIsBounded) {
  Server s([](Peer& p) {
    p.Send("220 mail.test\r\n");
    p.Expect("EHLO mailward.invalid");
    std::string many;
    for (int i = 0; i < 250; ++i) many += "250-X" + std::to_string(i) + "\r\n";
    p.Send(many);
    p.Drain();
  });
  auto r = probe::ProbeOne("127.0.0.1", s.port, As(Proto::kSmtp));
  s.Join();
  EXPECT_EQ(r.error, "an SMTP reply of more than 200 lines");
}

TEST(ProbeServer, SmtpsImplicitTls) {
  Server s([](Peer& p) {
    if (!p.Tls(ValidCert())) return;
    p.Send("220 mail.test ESMTP\r\n");
    p.Expect("EHLO mailward.invalid");
    p.Send("250-mail.test\r\n250 AUTH PLAIN\r\n");
    p.Expect("QUIT");
  });
  auto r = probe::ProbeOne("127.0.0.1", s.port, As(Proto::kSmtps));
  s.Join();
  EXPECT_EQ(s.mismatches, "");
  ASSERT_TRUE(r.tls.has_value()) << r.error;
  EXPECT_EQ(r.capabilities, (std::vector<std::string>{"AUTH PLAIN"}));
  EXPECT_FALSE(r.cleartext_login);  // AUTH over TLS only
}

TEST(ProbeServer, PlainTcpClosedPortAndBadSource) {
  Server s([](Peer&) {});
  probe::Options tcp = As(Proto::kTcp);
  tcp.source = "127.0.0.1";
  auto r = probe::ProbeOne("127.0.0.1", s.port, tcp);
  s.Join();
  EXPECT_EQ(r.state, "open");
  EXPECT_EQ(r.error, "");
  EXPECT_GE(r.connect_ms, 0);

  // The same port once nobody listens: refused, "closed".
  auto closed = probe::ProbeOne("127.0.0.1", s.port, As(Proto::kImap));
  EXPECT_EQ(closed.state, "closed");
  EXPECT_EQ(closed.greeting, "");

  probe::Options src = As(Proto::kTcp);
  src.source = "192.0.2.1";  // not this host's address: bind fails before any packet leaves
  auto b = probe::ProbeOne("127.0.0.1", s.port, src);
  EXPECT_EQ(b.state, "filtered");
  EXPECT_EQ(b.error, "cannot bind the source address 192.0.2.1");
}

TEST(ProbeServer, ProbeAllKeepsTheInputOrder) {
  Server imap([](Peer& p) {
    p.Send("* OK imap\r\n");
    p.Drain();
  });
  Server pop([](Peer& p) {
    p.Send("+OK pop\r\n");
    p.Drain();
  });
  probe::Options o = As(Proto::kTcp);
  auto rs = probe::ProbeAll({{"127.0.0.1", pop.port}, {"127.0.0.1", imap.port}}, o);
  imap.Join();
  pop.Join();
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_EQ(rs[0].port, pop.port);
  EXPECT_EQ(rs[1].port, imap.port);
  EXPECT_EQ(rs[0].state, "open");
  EXPECT_EQ(rs[1].state, "open");
}

TEST(ProbeServer, ProtocolNamesAndLocalAddresses) {
  EXPECT_STREQ(probe::ProtoName(Proto::kImaps), "imaps");
  EXPECT_STREQ(probe::ProtoName(Proto::kSmtp), "smtp");
  EXPECT_STREQ(probe::ProtoName(Proto::kTcp), "tcp");
  EXPECT_EQ(probe::ProtoForPort(465), Proto::kSmtps);
  EXPECT_EQ(probe::ProtoForPort(25), Proto::kSmtp);
  EXPECT_EQ(probe::ProtoForPort(110), Proto::kPop3);
  EXPECT_EQ(probe::ProtoForPort(993), Proto::kImaps);
  auto local = probe::LocalAddresses();
  EXPECT_NE(std::find(local.begin(), local.end(), "127.0.0.1"), local.end());
  EXPECT_TRUE(probe::IsLocal("127.0.0.1"));
  EXPECT_TRUE(probe::IsLocal("127.3.2.1"));  // all of 127/8 is loopback
  EXPECT_TRUE(probe::IsLocal("::1"));
  EXPECT_TRUE(probe::IsLocal("localhost"));
  EXPECT_FALSE(probe::IsLocal("192.0.2.77"));
}


TEST(ProbeServer, HostNamesAreResolvedWithinTheDeadline) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  bool v4_first = getaddrinfo("localhost", "143", &hints, &res) == 0 && res && res->ai_family == AF_INET;
  if (res) freeaddrinfo(res);
  if (v4_first) {
    Server s([](Peer& p) { p.Drain(); });
    auto r = probe::ProbeOne("localhost", s.port, As(Proto::kTcp));
    s.Join();
    EXPECT_EQ(r.state, "open") << r.error;
    EXPECT_EQ(r.host, "localhost");
  }
  // Not a valid host name: refused at once by the resolver, or at worst cut at the deadline.
  probe::Options o = As(Proto::kTcp, 1);
  o.deadline_s = 2;
  auto start = std::chrono::steady_clock::now();
  auto bad = probe::ProbeOne("-bad-", 143, o);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_EQ(bad.state, "filtered");
  EXPECT_TRUE(bad.error.rfind("cannot resolve -bad-: ", 0) == 0 ||
              bad.error.rfind("name lookup of -bad- did not finish within the deadline", 0) == 0)
      << bad.error;
}

}  // namespace
}  // namespace mw
