#include "report/metrics.h"

#include <gtest/gtest.h>

namespace mw {
namespace {

TEST(Metrics, FailedCheckExportsOnlyWhatItLearned) {
  CheckMetrics m;
  m.up = false;
  m.backend = "nftables";
  std::string t = MetricsText(m);
  EXPECT_NE(t.find("mailward_up 0\n"), std::string::npos);
  EXPECT_NE(t.find("mailward_backend_info{backend=\"nftables\"} 1\n"), std::string::npos);
  for (const char* unknown : {"mailward_in_sync", "mailward_conflicts", "mailward_drift_changes",
                              "mailward_dovecot_findings", "mailward_probe_", "mailward_last_apply"})
    EXPECT_EQ(t.find(unknown), std::string::npos) << unknown;
}

TEST(Metrics, FullCheck) {
  CheckMetrics m;
  m.up = true;
  m.in_sync = true;
  m.changes = 0;
  m.conflicts = 2;
  m.findings = std::map<std::string, size_t>{{"low", 1}};
  m.managers = {{"ufw", false}, {"firewalld", true}};
  m.timestamp = 1000;
  m.last_apply = 900.5;
  m.probes = std::vector<CheckMetrics::Probe>{{"127.0.0.1", 993, "open", 1, 1000 + 86400},
                                              {"127.0.0.1", 995, "closed", 0, std::nullopt}};
  std::string t = MetricsText(m);
  EXPECT_NE(t.find("mailward_conflicts 2\n"), std::string::npos);
  EXPECT_NE(t.find("mailward_dovecot_findings{severity=\"low\"} 1\n"), std::string::npos);
  EXPECT_NE(t.find("mailward_dovecot_findings{severity=\"critical\"} 0\n"), std::string::npos);
  EXPECT_NE(t.find("mailward_firewall_manager_active{manager=\"firewalld\"} 1\n"), std::string::npos);
  EXPECT_NE(t.find("mailward_tls_cert_expiry_seconds{host=\"127.0.0.1\",port=\"993\"} 86400\n"), std::string::npos);
  EXPECT_NE(t.find("mailward_tls_cert_not_after_timestamp_seconds{host=\"127.0.0.1\",port=\"993\"} 87400\n"),
            std::string::npos);
  EXPECT_EQ(t.find("port=\"995\"} 87400"), std::string::npos);
  EXPECT_EQ(t.find("mailward_tls_cert_expiry_seconds{host=\"127.0.0.1\",port=\"995\"}"), std::string::npos);
  EXPECT_NE(t.find("mailward_last_apply_success_timestamp_seconds 900.500\n"), std::string::npos);
}

TEST(Metrics, ParseUtcTimestamp) {
  EXPECT_EQ(ParseUtcTimestamp("1970-01-02T00:00:00Z"), 86400.0);
  EXPECT_EQ(ParseUtcTimestamp("2026-11-26T14:05:00Z"), 1795701900.0);
  EXPECT_FALSE(ParseUtcTimestamp("Nov 26 14:05:00 2026 GMT").has_value());
}

}  // namespace
}  // namespace mw
