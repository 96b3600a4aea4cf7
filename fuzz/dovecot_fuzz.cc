// libFuzzer target: the Dovecot parser and auditor on an in-memory tree: the input is
// dovecot.conf; it may include conf.d/*.conf, which hold fixed snippets and the input again.
#include <cstddef>
#include <cstdint>
#include <string>

#include "dovecot/audit.h"
#include "dovecot/config.h"
#include "fakes/memory_files.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  mw::testing::MemoryFiles fs;
  fs.Add("/etc/dovecot/dovecot.conf", text);
  fs.Add("/etc/dovecot/conf.d/10-a.conf", "auth_debug = yes\nprotocol imap {\n  mail_debug = yes\n}\n");
  fs.Add("/etc/dovecot/conf.d/20-self.conf", text);
  fs.Add("/etc/dovecot/key.pem", "KEY", 0644);
  auto cfg = mw::dovecot::Parse("/etc/dovecot/dovecot.conf", fs);
  if (cfg.ok()) (void)mw::dovecot::Audit(*cfg, fs, {});
  return 0;
}
