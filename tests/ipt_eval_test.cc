// iptables-save rules other tools write (fail2ban, Docker, CSF, hand-made), walked by the
// reachability engine: each match decided for a new TCP connection, or left undecided.
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "analysis/ipt_eval.h"
#include "analysis/reach.h"

namespace mw::analysis {
namespace {

Cidr C(const char* s, int prefix) {
  Cidr c;
  std::string err;
  EXPECT_TRUE(ParseCidr(s, &c, &err)) << s;
  c.prefix = prefix;
  return c;
}

Flow F(uint16_t port, const char* from = nullptr, const char* iif = nullptr, Family fam = Family::kV4) {
  Flow f;
  f.family = fam;
  f.dport = port;
  f.interfaces = {Interface{"lo", {C("127.0.0.1", 8)}, true, false},
                  Interface{"eth0", {C("198.51.100.1", 24), C("2001:db8::1", 64)}, false, false},
                  Interface{"docker0", {C("172.17.0.1", 16)}, false, true}};
  f.daddr = C(fam == Family::kV4 ? "198.51.100.1" : "2001:db8::1", 128).addr;
  if (from) f.saddr = C(from, 128).addr;
  if (iif) f.iif = iif;
  return f;
}

/// `rules` ("-A INPUT ...", one a line) in the filter table, INPUT policy ACCEPT.
Verdict Filter(const std::string& rules, const Flow& f, std::shared_ptr<const Ipsets> sets = nullptr,
               const std::string& more_tables = "") {
  Topology t;
  AddIptablesTables(more_tables + "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:sub - [0:0]\n" + rules +
                        "\nCOMMIT\n",
                    f.family, false, sets, &t);
  return Walk(t, f);
}

Reach R(const std::string& rules, const Flow& f, std::shared_ptr<const Ipsets> sets = nullptr) {
  return Filter(rules, f, sets).reach;
}

TEST(IptEval, AddressesInterfacesAndPorts) {
  const std::string src = "-A INPUT -s 203.0.113.0/24 -j DROP";
  EXPECT_EQ(R(src, F(143, "203.0.113.9")), Reach::kBlocked);
  EXPECT_EQ(R(src, F(143, "198.51.100.9")), Reach::kReaches);
  // Host bits set in a hand-made file: read as the network.
  EXPECT_EQ(R("-A INPUT -s 203.0.113.77/24,192.0.2.1 -j DROP", F(143, "203.0.113.9")), Reach::kBlocked);
  EXPECT_EQ(R("-A INPUT -s 203.0.113.77/99 -j DROP", F(143, "203.0.113.9")), Reach::kReaches);
  EXPECT_EQ(R("-A INPUT ! -s 203.0.113.0/24 -j DROP", F(143, "203.0.113.9")), Reach::kReaches);
  EXPECT_EQ(R("-A INPUT -s 0.0.0.0/0 -p tcp -m tcp --dport 143 -j DROP", F(143)), Reach::kBlocked);
  EXPECT_EQ(R("-A INPUT -p udp -j DROP", F(143)), Reach::kReaches);
  EXPECT_EQ(R("-A INPUT -d 198.51.100.1/32 -j REJECT --reject-with tcp-reset", F(143)), Reach::kBlocked);
  EXPECT_EQ(R("-A INPUT -d 10.0.0.1/32 -j DROP", F(143)), Reach::kReaches);
  EXPECT_EQ(R("-A INPUT -d ::/0 -j DROP", F(143, nullptr, nullptr, Family::kV6)), Reach::kBlocked);

  EXPECT_EQ(R("-A INPUT -i eth0 -j DROP", F(143, nullptr, "eth0")), Reach::kBlocked);
  EXPECT_EQ(R("-A INPUT -i eth+ -j DROP", F(143, nullptr, "eth1")), Reach::kBlocked);
  EXPECT_EQ(R("-A INPUT -i wg0 -j DROP", F(143, nullptr, "eth1")), Reach::kReaches);
  EXPECT_EQ(R("-A INPUT -i eth0 -j DROP", F(143)), Reach::kMaybeBlocked);  // which interface is unknown
  EXPECT_EQ(R("-A INPUT -i lo -j DROP", F(143)), Reach::kReaches);         // never loopback
  EXPECT_EQ(R("-A INPUT -o eth0 -j DROP", F(143)), Reach::kReaches);       // no output interface on input

  EXPECT_EQ(R("-A INPUT -p tcp -m multiport --dports 100:200,993 -j DROP", F(143)), Reach::kBlocked);
  EXPECT_EQ(R("-A INPUT -p tcp -m multiport --dports 1000: -j DROP", F(143)), Reach::kReaches);
  EXPECT_EQ(R("-A INPUT -p tcp -m multiport --dports :200 -j DROP", F(143)), Reach::kBlocked);
  EXPECT_EQ(R("-A INPUT -p tcp -m multiport --ports 143 -j DROP", F(143)), Reach::kBlocked);
  EXPECT_EQ(R("-A INPUT -p tcp -m multiport --ports 25 -j DROP", F(143)), Reach::kMaybeBlocked);  // a source port may be 25
  EXPECT_EQ(R("-A INPUT -p tcp --sport 1024:65535 -j DROP", F(143)), Reach::kMaybeBlocked);
}

TEST(IptEval, ConntrackAddrtypeAndTcpFlags) {
  EXPECT_EQ(R("-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j DROP", F(143)), Reach::kReaches);
  EXPECT_EQ(R("-A INPUT -m state --state NEW -j DROP", F(143)), Reach::kBlocked);
  EXPECT_EQ(R("-A INPUT -m conntrack --ctstatus NONE -j DROP", F(143)), Reach::kBlocked);
  EXPECT_EQ(R("-A INPUT -m conntrack --ctorigdstport 143 -j DROP", F(143)), Reach::kBlocked);
  EXPECT_EQ(R("-A INPUT -m conntrack --ctorigdst 198.51.100.1 -j DROP", F(143)), Reach::kBlocked);
  EXPECT_EQ(R("-A INPUT -m conntrack --ctorigdst 0.0.0.0/0 -j DROP", F(143)), Reach::kBlocked);
  EXPECT_EQ(R("-A INPUT -m conntrack --ctorigsrc 203.0.113.9 -j DROP", F(143, "203.0.113.9")), Reach::kBlocked);
  EXPECT_EQ(R("-A INPUT -m conntrack --ctorigsrc 0.0.0.0/0 -j DROP", F(143)), Reach::kBlocked);
  EXPECT_EQ(R("-A INPUT -m conntrack --ctreplsrc 198.51.100.1 -j DROP", F(143)), Reach::kBlocked);
  EXPECT_EQ(R("-A INPUT -m conntrack --ctreplsrc 0.0.0.0/0 -j DROP", F(143)), Reach::kBlocked);
  EXPECT_EQ(R("-A INPUT -m conntrack --ctdir REPLY -j DROP", F(143)), Reach::kReaches);
  EXPECT_EQ(R("-A INPUT -m conntrack --ctproto tcp -j DROP", F(143)), Reach::kBlocked);

  EXPECT_EQ(R("-A INPUT -m addrtype --dst-type LOCAL --limit-iface-in -j DROP", F(143)), Reach::kBlocked);
  EXPECT_EQ(R("-A INPUT -m addrtype --src-type LOCAL -j DROP", F(143)), Reach::kReaches);
  EXPECT_EQ(R("-A INPUT -m pkttype --pkt-type broadcast -j DROP", F(143)), Reach::kReaches);
  EXPECT_EQ(R("-A INPUT -p tcp --syn -j DROP", F(143)), Reach::kBlocked);
  EXPECT_EQ(R("-A INPUT -p tcp --tcp-flags FIN,SYN,RST,ACK SYN -j DROP", F(143)), Reach::kBlocked);
  EXPECT_EQ(R("-A INPUT -p tcp --tcp-flags ALL NONE -j DROP", F(143)), Reach::kReaches);
  EXPECT_EQ(R("-A INPUT -p tcp --tcp-flags SYN,ACK SYN,ACK -j DROP", F(143)), Reach::kReaches);
  EXPECT_EQ(R("-A INPUT -p tcp --tcp-flags ALL ALL -j DROP", F(143)), Reach::kReaches);
  // No routing header, not ICMP, not a fragment.
  EXPECT_EQ(R("-A INPUT -m rt --rt-type 0 -j DROP", F(143, nullptr, nullptr, Family::kV6)), Reach::kReaches);
  EXPECT_EQ(R("-A INPUT -f -j DROP", F(143)), Reach::kReaches);
  EXPECT_EQ(R("-A INPUT -p icmp -m icmp --icmp-type 8 -j DROP", F(143)), Reach::kReaches);
}

TEST(IptEval, MarksSetInMangleAreSeenInFilter) {
  const std::string mangle = "*mangle\n:PREROUTING ACCEPT [0:0]\n"
                             "-A PREROUTING -p tcp --dport 143 -j MARK --set-xmark 0x5/0xffffffff\n"
                             "-A PREROUTING -p tcp --dport 143 -j CONNMARK --set-mark 0x7\n"
                             "-A PREROUTING -p tcp --dport 993 -j MARK --set-mark 0x1/0xff\n"
                             "-A PREROUTING -p tcp --dport 993 -j MARK --or-mark 0x4\n"
                             "-A PREROUTING -p tcp --dport 110 -j MARK --set-mark 0xf\n"
                             "-A PREROUTING -p tcp --dport 110 -j MARK --and-mark 0x3\n"
                             "-A PREROUTING -p tcp --dport 995 -j CONNMARK --set-mark 0x9\n"
                             "-A PREROUTING -p tcp --dport 995 -j CONNMARK --restore-mark\n"
                             "-A PREROUTING -p tcp --dport 587 -j MARK --set-mark 0x2\n"
                             "-A PREROUTING -p tcp --dport 587 -j CONNMARK --save-mark\n"
                             "-A PREROUTING -p tcp --dport 465 -j MARK --random-thing\n"
                             "COMMIT\n";
  auto verdict = [&](const std::string& rule, uint16_t port) { return Filter(rule, F(port), nullptr, mangle).reach; };
  EXPECT_EQ(verdict("-A INPUT -m mark --mark 0x5 -j DROP", 143), Reach::kBlocked);
  EXPECT_EQ(verdict("-A INPUT -m connmark --mark 0x7 -j DROP", 143), Reach::kBlocked);
  EXPECT_EQ(verdict("-A INPUT -m mark --mark 0x5 -j DROP", 25), Reach::kReaches);
  EXPECT_EQ(verdict("-A INPUT -m mark --mark 0x5/0xff -j DROP", 993), Reach::kBlocked);   // 0x1 | 0x4
  EXPECT_EQ(verdict("-A INPUT -m mark --mark 0x3 -j DROP", 110), Reach::kBlocked);        // 0xf & 0x3
  EXPECT_EQ(verdict("-A INPUT -m mark --mark 0x9 -j DROP", 995), Reach::kBlocked);        // restored from ct
  EXPECT_EQ(verdict("-A INPUT -m connmark --mark 0x2 -j DROP", 587), Reach::kBlocked);    // saved to ct
  EXPECT_EQ(verdict("-A INPUT -m mark --mark 0x0 -j DROP", 465), Reach::kMaybeBlocked);   // unknown mark
}

TEST(IptEval, IpsetsRecentConnlimitAndRanges) {
  auto sets = std::make_shared<Ipsets>(ParseIpsetSave(
      "create f2b-dovecot hash:ip family inet hashsize 1024 maxelem 65536\n"
      "add f2b-dovecot 203.0.113.9\n"
      "create nets hash:net family inet\nadd nets 192.0.2.0/24\nadd nets 10.0.0.1-10.0.0.5\n"
      "create pairs hash:ip,port family inet\nadd pairs 203.0.113.9,tcp:143\n"
      "create six hash:ip family inet6\nadd six 2001:db8::9\n"
      "create except hash:net family inet\nadd except 192.0.2.0/24\nadd except 192.0.2.7 nomatch\n"
      "add unknown 1.2.3.4\n"));
  EXPECT_TRUE(sets->sets["f2b-dovecot"].decidable);
  EXPECT_FALSE(sets->sets["nets"].decidable);   // a range: not read here
  EXPECT_FALSE(sets->sets["pairs"].decidable);  // not an address set
  EXPECT_EQ(sets->sets["six"].family, Family::kV6);
  EXPECT_EQ(sets->sets["six"].entries.size(), 1u);
  // A nomatch entry is an exception, not a member: such a set is not decided here.
  EXPECT_FALSE(sets->sets["except"].decidable);
  EXPECT_EQ(R("-A INPUT -m set --match-set except src -j DROP", F(143, "192.0.2.7"), sets), Reach::kMaybeBlocked);

  const std::string ban = "-A INPUT -p tcp -m multiport --dports 143,993 -m set --match-set f2b-dovecot src -j REJECT";
  EXPECT_EQ(R(ban, F(143, "203.0.113.9"), sets), Reach::kBlocked);
  EXPECT_EQ(R(ban, F(143, "203.0.113.8"), sets), Reach::kReaches);
  Verdict ordinary = Filter(ban, F(143), sets);
  EXPECT_EQ(ordinary.reach, Reach::kReaches);
  ASSERT_EQ(ordinary.restrictions.size(), 1u);
  EXPECT_EQ(ordinary.restrictions[0].rule, ban);
  EXPECT_EQ(R("-A INPUT -m set --match-set nets src -j DROP", F(143, "192.0.2.1"), sets), Reach::kMaybeBlocked);
  EXPECT_EQ(R("-A INPUT -m set --match-set gone src -j DROP", F(143, "192.0.2.1"), sets), Reach::kMaybeBlocked);
  EXPECT_EQ(R("-A INPUT -m set --match-set f2b-dovecot dst -j DROP", F(143), sets), Reach::kReaches);
  EXPECT_EQ(R("-A INPUT -m set ! --match-set f2b-dovecot src --return-nomatch -j DROP", F(143, "203.0.113.8"), sets),
            Reach::kBlocked);

  const std::string recent = "-A INPUT -p tcp --dport 143 -m recent --rcheck --seconds 60 --hitcount 4 --name imap "
                             "--mask 255.255.255.255 --rsource -j DROP";
  Verdict r = Filter(recent, F(143));
  EXPECT_EQ(r.reach, Reach::kReaches);
  EXPECT_EQ(r.restrictions.size(), 1u);
  EXPECT_EQ(R("-A INPUT -m recent --set --name imap --rsource", F(143)), Reach::kReaches);

  Verdict cl = Filter("-A INPUT -p tcp --dport 143 -m connlimit --connlimit-above 10 --connlimit-mask 32 "
                      "--connlimit-saddr -j REJECT",
                      F(143));
  EXPECT_EQ(cl.reach, Reach::kReaches);
  EXPECT_EQ(cl.restrictions.size(), 1u);
  EXPECT_EQ(R("-A INPUT -m hashlimit --hashlimit-upto 5/sec --hashlimit-burst 5 --hashlimit-mode srcip "
              "--hashlimit-name x -j ACCEPT\n-A INPUT -j DROP",
              F(143)),
            Reach::kReaches);

  const std::string range = "-A INPUT -m iprange --src-range 203.0.113.1-203.0.113.20 -j DROP";
  EXPECT_EQ(R(range, F(143, "203.0.113.9")), Reach::kBlocked);
  EXPECT_EQ(R(range, F(143, "203.0.113.30")), Reach::kReaches);
  EXPECT_EQ(R("-A INPUT -m iprange --src-range nonsense -j DROP", F(143, "203.0.113.9")), Reach::kMaybeBlocked);
  EXPECT_EQ(R("-A INPUT -m iprange --dst-range 198.51.100.1-198.51.100.9 -j DROP", F(143)), Reach::kMaybeBlocked);
}

TEST(IptEval, UnknownMatchesQuotesCountersAndTargets) {
  EXPECT_EQ(R("-A INPUT -m geoip --src-cc CN,RU -j DROP", F(143)), Reach::kMaybeBlocked);
  EXPECT_EQ(R("-A INPUT -p tcp --some-new-option x y -j DROP", F(143)), Reach::kMaybeBlocked);
  Verdict quoted = Filter("-A INPUT -p tcp -m comment --comment \"mail \\\"ports\\\" here\" --dport 143 -j DROP", F(143));
  EXPECT_EQ(quoted.reach, Reach::kBlocked);
  EXPECT_EQ(SplitIptablesWords("-m comment --comment \"a \\\"b\\\"\" \"\" -j X"),
            (std::vector<std::string>{"-m", "comment", "--comment", "a \"b\"", "", "-j", "X"}));
  EXPECT_EQ(R("-A INPUT -c 10 20 -p tcp --dport 143 -j DROP", F(143)), Reach::kBlocked);
  EXPECT_EQ(R("-A INPUT -j NFQUEUE --queue-num 1", F(143)), Reach::kMaybeBlocked);
  EXPECT_EQ(R("-A INPUT -j LOG --log-prefix \"x \"\n-A INPUT -p tcp --dport 993 -j DROP", F(143)), Reach::kReaches);
  // goto and return: the sub chain's RETURN goes back to INPUT's caller, its policy.
  const std::string go = "-A INPUT -g sub\n-A INPUT -j DROP\n-A sub -p tcp --dport 143 -j RETURN\n-A sub -j DROP";
  EXPECT_EQ(R(go, F(143)), Reach::kReaches);
  EXPECT_EQ(R(go, F(993)), Reach::kBlocked);
  const std::string jump = "-A INPUT -j sub\n-A INPUT -j DROP\n-A sub -p tcp --dport 143 -j RETURN";
  EXPECT_EQ(R(jump, F(143)), Reach::kBlocked);  // back in INPUT after the jump
}

TEST(IptEval, NatTargetsAndTablePriorities) {
  auto nat = [](const std::string& rule, const Flow& f) {
    Topology t;
    AddIptablesTables("# Generated by iptables-save\r\n*nat\r\n:PREROUTING ACCEPT [0:0]\r\n" + rule + "\r\nCOMMIT\r\n",
                      f.family, false, nullptr, &t);
    return Walk(t, f);
  };
  EXPECT_EQ(nat("-A PREROUTING -p tcp --dport 143 -j DNAT --to-destination 172.17.0.2:8143", F(143)).destination,
            "172.17.0.2:8143");
  EXPECT_EQ(nat("-A PREROUTING -p tcp --dport 143 -j DNAT --to-destination 172.17.0.2-172.17.0.9", F(143)).destination,
            "172.17.0.2:143");
  EXPECT_EQ(nat("-A PREROUTING -p tcp --dport 143 -j REDIRECT --to-ports 10143", F(143)).destination, "127.0.0.1:10143");
  Flow six = F(143, nullptr, nullptr, Family::kV6);
  EXPECT_EQ(nat("-A PREROUTING -p tcp --dport 143 -j DNAT --to-destination [2001:db8::5]:8143", six).destination,
            "[2001:db8::5]:8143");
  EXPECT_EQ(nat("-A PREROUTING -p tcp --dport 143 -j REDIRECT", six).destination, "[::1]:143");

  // Raw, mangle and security tables are on the path too; an unknown table is not.
  for (const char* table : {"raw", "mangle", "security"}) {
    Topology t;
    AddIptablesTables(std::string("*") + table + "\n:" + (std::string(table) == "security" ? "INPUT" : "PREROUTING") +
                          " DROP [0:0]\nCOMMIT\n",
                      Family::kV4, false, nullptr, &t);
    ASSERT_EQ(t.tables.size(), 1u);
    EXPECT_EQ(t.tables[0].Label(), std::string("iptables ") + table);
    EXPECT_EQ(Walk(t, F(143)).reach, Reach::kBlocked) << table;
  }
  Topology odd;
  AddIptablesTables("*weird\n:INPUT DROP [0:0]\n:OUTPUT DROP [0:0]\nCOMMIT\n", Family::kV4, false, nullptr, &odd);
  EXPECT_EQ(Walk(odd, F(143)).reach, Reach::kReaches);
}

}  // namespace
}  // namespace mw::analysis
