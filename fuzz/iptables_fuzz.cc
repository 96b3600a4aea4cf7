// libFuzzer target: any iptables-save text (another tool's rules, hand-edited, truncated) must
// become a topology the reachability engine walks to a verdict, never a crash or a hang.
#include <cstddef>
#include <cstdint>
#include <string>

#include "analysis/ipt_eval.h"
#include "analysis/judge.h"
#include "analysis/reach.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  size_t cut = text.find("\n---\n");  // an optional ipset save after the rules
  auto sets = std::make_shared<mw::analysis::Ipsets>(
      mw::analysis::ParseIpsetSave(cut == std::string::npos ? "" : text.substr(cut + 5)));
  mw::analysis::Topology t;
  mw::analysis::AddIptablesTables(text.substr(0, cut), mw::Family::kV4, false, sets, &t);
  mw::Cidr host;
  std::string err;
  mw::ParseCidr("198.51.100.1", &host, &err);
  host.prefix = 24;
  std::vector<mw::analysis::Interface> ifs = {{"eth0", {host}, false, false}};
  mw::analysis::PortClaim imap{143, "imap", false, {{"office", {}}}};
  mw::analysis::PortClaim imaps{993, "imaps", true, {}};
  (void)mw::analysis::Judge(t, ifs, {imap, imaps});
  return 0;
}
