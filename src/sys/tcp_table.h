// sys/: the host's TCP sockets, as anti-lockout and `init` read them.
//
// /proc/net/tcp walks every bucket of the kernel's (host-wide) established hash on each read:
// about 5 ms a file on an idle 24 GB host, whatever the namespace holds. The sock_diag netlink
// dump asks for the states wanted only and costs a fraction of that; its rows are written in
// /proc/net/tcp's own text format so one parser (and the tests' fixtures) serve both.
#pragma once

#include <optional>
#include <string>

#include "util/status.h"

namespace mw::sys {

/// The ESTABLISHED and LISTEN TCP sockets of `family` (AF_INET or AF_INET6) in this network
/// namespace, as /proc/net/tcp{,6} text (header line, then "sl local rem st ... uid timeout
/// inode" rows). Through NETLINK_SOCK_DIAG; /proc/net/tcp{,6} itself when that cannot be used
/// (no inet_diag in the kernel).
Result<std::string> TcpTableText(int family);

/// The same from NETLINK_SOCK_DIAG only: nullopt when it cannot answer (exposed for tests, so
/// that they see the dump itself and not the /proc fallback).
std::optional<std::string> TcpTableFromSockDiag(int family);

/// One row in /proc/net/tcp's format (exposed for tests): `local`/`remote` are the raw
/// addresses as the kernel keeps them (4 or 16 bytes, network order), ports in host order.
std::string TcpRow(unsigned sl, int family, const unsigned char* local, unsigned lport, const unsigned char* remote,
                   unsigned rport, unsigned state, unsigned uid, unsigned long long inode);

}  // namespace mw::sys
