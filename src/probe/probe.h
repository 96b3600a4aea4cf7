// Probes: look at a port the way a client does. TCP connect with timeouts; IMAP, POP3 and SMTP
// greetings and capabilities; STARTTLS/STLS upgrades and implicit TLS with OpenSSL (version,
// cipher, certificate subject and expiry). Never sends credentials.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mw::probe {

enum class Proto { kTcp, kImap, kImaps, kPop3, kPop3s, kSmtp, kSmtps };

/// The protocol a port speaks by convention (143 imap, 993 imaps, 110 pop3, 995 pop3s, 25/587
/// smtp, 465 smtps), else plain TCP.
Proto ProtoForPort(uint16_t port);
const char* ProtoName(Proto p);

struct TlsInfo {
  std::string version;   ///< "TLSv1.3"
  std::string cipher;
  std::string subject;   ///< certificate subject, one line
  std::string not_after; ///< "2026-11-26T14:05:00Z"
  long days_left = 0;    ///< negative: expired
};

struct Result {
  std::string host;
  uint16_t port = 0;
  Proto proto = Proto::kTcp;
  std::string state;  ///< "open" | "closed" | "filtered"
  double connect_ms = 0;
  std::string greeting;              ///< the first line, trimmed to 200 characters
  std::vector<std::string> capabilities;  ///< before TLS (IMAP CAPABILITY, POP3 CAPA, SMTP EHLO)
  bool starttls = false;             ///< STARTTLS / STLS offered
  bool login_disabled = false;       ///< IMAP LOGINDISABLED before TLS
  std::vector<std::string> auth_cleartext;  ///< SASL mechanisms offered before TLS
  bool cleartext_login = false;      ///< a password can cross before TLS (checked without sending one)
  /// How cleartext_login was decided: "USER accepted before TLS", "AUTHENTICATE PLAIN refused
  /// before TLS: ...", "no LOGINDISABLED: LOGIN allowed before TLS"...
  std::string cleartext_evidence;
  std::optional<TlsInfo> tls;        ///< after STARTTLS or implicit TLS
  std::string error;                 ///< what went wrong after the connection, if anything
};

struct Options {
  double timeout_s = 3;      ///< per network step (connect, each read, the handshake)
  double deadline_s = 15;    ///< for one whole probe
  std::string source;        ///< bind to this source address (empty: the kernel's choice)
  /// Speak this protocol instead of the port's convention (ProtoForPort): a service on a
  /// non-standard port.
  std::optional<Proto> proto;
};

/// Probes one port. Never throws; always returns within about `deadline_s`.
Result ProbeOne(const std::string& host, uint16_t port, const Options& opt);

/// Probes every (host, port) concurrently; results in input order.
std::vector<Result> ProbeAll(const std::vector<std::pair<std::string, uint16_t>>& targets, const Options& opt);

/// Text-only protocol helpers (tests).
std::vector<std::string> ParseImapCapabilityLine(const std::string& line);

/// This host's addresses (no link-local IPv6); loopback included.
std::vector<std::string> LocalAddresses();
/// Whether `host` is one of this host's addresses: traffic to it crosses loopback.
bool IsLocal(const std::string& host);

}  // namespace mw::probe
