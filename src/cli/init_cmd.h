// `mailward init`: a starter policy from what this host runs (the mail ports listening now,
// Dovecot's configuration), commented and valid, never overwriting a policy without --force.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cli/commands.h"

namespace mw {

struct InitOptions {
  std::string output;  ///< where to write ("": the --policy path); "-": stdout
  bool force = false;  ///< overwrite an existing file
};

/// A TCP socket listening on this host.
struct Listener {
  uint16_t port = 0;
  bool loopback_only = false;  ///< bound to 127.0.0.1 / ::1 only
};

/// Parses /proc/net/tcp or tcp6 text: the LISTEN sockets. Pure, for tests.
std::vector<Listener> ParseListeners(const std::string& proc_net_tcp);

/// The starter policy for these listeners. Pure, for tests.
std::string StarterPolicy(const std::vector<Listener>& listening, bool have_dovecot, const std::string& ssh_client);

int CmdInit(const GlobalOptions& g, const InitOptions& o);

}  // namespace mw
