"""The nftables backend against the real kernel, in namespaces: reachability over IPv4 and IPv6,
coexistence with other tables, drift found and repaired, bad policies change nothing."""
import json
import os
import subprocess
import unittest

from mwtest import (ALLOWED_V4, ALLOWED_V6, MAILWARD, assert_mail_policy_reachability, MailwardCase, other_tables, run,
                    PLAIN_V4, PLAIN_V6, Sandbox, Topology)

POLICY = """\
version: 1
backend: nftables
allowlists:
  office:
    - {allowed_v4}
    - {allowed_v6}/128
ports:
  imap:
    state: closed
    allow: [office]
  imaps:
    state: open
  pop3:
    state: closed
    action: reject
""".format(allowed_v4=ALLOWED_V4, allowed_v6=ALLOWED_V6)

# Rules of other tools that must survive untouched: a Docker-like ip table, a fail2ban-like
# inet table with a set, and the admin's own filter table accepting 22.
OTHERS = """\
table ip docker_like {
  chain DOCKER { }
  chain forward { type filter hook forward priority filter; policy accept; jump DOCKER; }
}
table inet f2b-table {
  set addr-set-sshd { type ipv4_addr; elements = { 192.0.2.66 } }
  chain f2b-chain { type filter hook input priority filter - 1; policy accept;
    tcp dport 22 ip saddr @addr-set-sshd reject
  }
}
table inet admin {
  chain input { type filter hook input priority filter; policy accept;
    tcp dport 22 accept comment "admin ssh"
  }
}
"""


class Reachability(MailwardCase):
    def setUp(self):
        super().setUp()
        self.topo = Topology()
        self.addCleanup(self.topo.close)
        self.topo.serve([110, 143, 993])
        self.policy = self.write("policy.yaml", POLICY)

    def test_closed_port_blocked_from_plain_source_open_from_allowlisted(self):
        before = self.topo.reach()
        self.assertTrue(all(v == "open" for v in before.values()), before)
        p = self.mw(self.topo.in_host, "apply", policy=self.policy)
        self.assertEqual(p.returncode, 0, p.stderr)
        after = self.topo.reach()
        assert_mail_policy_reachability(self, after)
        # Loopback is exempt: local webmail keeps working.
        lo = self.topo.in_host(["python3", "-c",
                                "import socket;s=socket.create_connection(('127.0.0.1',143),1);print(s.recv(9))"])
        self.assertIn("OK", lo.stdout)

    def test_second_apply_changes_nothing(self):
        self.assertEqual(self.mw(self.topo.in_host, "apply", policy=self.policy).returncode, 0)
        rc, j = self.mw_json(self.topo.in_host, "apply", policy=self.policy)
        self.assertEqual(rc, 0)
        self.assertFalse(j["applied"])
        self.assertEqual(j["changes"], [])
        rc, j = self.mw_json(self.topo.in_host, "plan", policy=self.policy)
        self.assertEqual(rc, 0)
        self.assertTrue(j["in_sync"])


class Status(MailwardCase):
    """`mailward status`: each port's effective state per family, checked against real
    connections from the client namespace."""

    def setUp(self):
        super().setUp()
        self.topo = Topology()
        self.addCleanup(self.topo.close)
        self.topo.serve([110, 143, 993])
        self.policy = self.write("policy.yaml", POLICY)

    def status(self):
        rc, j = self.mw_json(self.topo.in_host, "status", policy=self.policy)
        self.assertEqual(rc, 0, j)
        return j

    def assert_status_matches_connections(self, j):
        """A port/family reads as_policy exactly when real connections from the plain and the
        allowlisted source behave as the policy says."""
        reach = self.topo.reach()
        want = {143: ("filtered", "open"), 110: ("closed", "closed"), 993: ("open", "open")}
        for p in j["ports"]:
            for fam, (plain, allowed) in (("ipv4", (PLAIN_V4, ALLOWED_V4)), ("ipv6", (PLAIN_V6, ALLOWED_V6))):
                real_ok = (reach[(p["port"], plain)], reach[(p["port"], allowed)]) == want[p["port"]]
                # "closed" and "filtered" both keep a plain source out of a closed port.
                if p["port"] == 143 and reach[(143, plain)] in ("closed", "filtered"):
                    real_ok = reach[(143, allowed)] == "open"
                self.assertEqual(p["families"][fam]["as_policy"], real_ok, (p, fam, reach))

    def test_before_and_after_apply_and_with_an_admin_table_in_the_way(self):
        j = self.status()
        self.assertFalse(j["in_sync"])
        self.assertFalse(j["enforced"])
        self.assertIsNone(j["last_apply"])
        self.assert_status_matches_connections(j)
        self.assertEqual(self.mw(self.topo.in_host, "apply", "--no-probe", policy=self.policy).returncode, 0)
        j = self.status()
        self.assertTrue(j["enforced"], j)
        self.assertEqual(j["last_apply"]["seq"], 1)
        self.assertIsNone(j["pending_confirm"])
        by_port = {p["port"]: p for p in j["ports"]}
        self.assertEqual(by_port[143]["effective"], "closed except office (2 entries)")
        self.assertEqual(by_port[110]["effective"], "closed (reject) to all")
        self.assertEqual(by_port[993]["effective"], "open")
        self.assert_status_matches_connections(j)
        # An admin's IPv4 table that drops everything but 22 blocks 993 and the allowlisted 143.
        self.topo.in_host(["nft", "-f", self.write("strict.nft", """\
table ip strict {
  chain input { type filter hook input priority filter; policy drop;
    tcp dport 22 accept
  }
}
""")])
        j = self.status()
        self.assertFalse(j["enforced"])
        by_port = {p["port"]: p for p in j["ports"]}
        self.assertFalse(by_port[993]["families"]["ipv4"]["as_policy"])
        self.assertTrue(by_port[993]["families"]["ipv6"]["as_policy"])
        self.assertEqual(by_port[993]["families"]["ipv4"]["conflicts"], ["open-port-blocked (table ip strict)"])
        self.assert_status_matches_connections(j)
        text = self.mw(self.topo.in_host, "status", policy=self.policy).stdout
        self.assertIn("Status: applied, but not on every path", text)
        self.assertIn("fix: nft insert rule ip strict input tcp dport 993 accept", text)


class Init(MailwardCase):
    def test_starter_policy_from_the_listening_ports_never_overwrites(self):
        ns = Sandbox()
        self.addCleanup(ns.close)
        out = os.path.join(self.dir, "etc", "mailward", "policy.yaml")
        listen = ("import socket,subprocess,sys\n"
                  "ss=[socket.socket() for _ in range(2)]\n"
                  "ss[0].bind(('0.0.0.0',143)); ss[1].bind(('0.0.0.0',993)); [s.listen() for s in ss]\n"
                  "p=subprocess.run(sys.argv[1:],capture_output=True,text=True)\n"
                  "print(p.returncode); print(p.stdout); print(p.stderr, file=sys.stderr)\n")
        p = ns.run(["python3", "-c", listen, MAILWARD, "init", "-o", out])
        self.assertEqual(p.stdout.split("\n")[0], "0", p.stderr)
        text = open(out).read()
        self.assertIn("imap:", text)
        self.assertIn("imaps:", text)
        self.assertEqual(os.stat(out).st_mode & 0o777, 0o644)
        self.assertEqual(self.mw(ns.run, "--policy", out, "validate").returncode, 0)
        # The written policy does what it says: 143 closed, 993 open.
        rc, j = self.mw_json(ns.run, "validate", policy=out)
        states = {x["port"]: x["state"] for x in j["ports"]}
        self.assertEqual(states, {143: "closed", 993: "open"})
        # Never overwritten without --force.
        open(out, "a").write("# the admin's edit\n")
        p = self.mw(ns.run, "init", "-o", out)
        self.assertEqual(p.returncode, 1)
        self.assertIn("exists: not overwritten", p.stderr)
        self.assertIn("the admin's edit", open(out).read())
        self.assertEqual(self.mw(ns.run, "init", "-o", out, "--force").returncode, 0)
        self.assertNotIn("the admin's edit", open(out).read())


class Coexistence(MailwardCase):
    def setUp(self):
        super().setUp()
        self.ns = Sandbox()
        self.addCleanup(self.ns.close)
        self.policy = self.write("policy.yaml", POLICY)
        self.ns.run(["nft", "-f", self.write("others.nft", OTHERS)])

    def test_other_tables_byte_identical(self):
        before = other_tables(self.ns.run)
        self.assertEqual(len(before), 3)
        for _ in range(2):
            self.assertEqual(self.mw(self.ns.run, "apply", policy=self.policy).returncode, 0)
        self.assertEqual(self.mw(self.ns.run, "rollback").returncode, 0)
        self.assertEqual(self.mw(self.ns.run, "apply", policy=self.policy).returncode, 0)
        self.assertEqual(other_tables(self.ns.run), before)

    def test_bad_policy_leaves_ruleset_untouched(self):
        self.assertEqual(self.mw(self.ns.run, "apply", policy=self.policy).returncode, 0)
        before = self.ns.run(["nft", "list", "ruleset"]).stdout
        bad = self.write("bad.yaml", POLICY.replace(ALLOWED_V4, "198.51.100.300"))
        p = self.mw(self.ns.run, "apply", policy=bad)
        self.assertEqual(p.returncode, 1)
        self.assertIn("bad.yaml:5:7", p.stderr)
        self.assertIn("nothing was applied", p.stderr)
        self.assertEqual(self.ns.run(["nft", "list", "ruleset"]).stdout, before)

    def test_check_reports_a_table_that_still_blocks_an_open_port(self):
        self.ns.run(["nft", "-f", self.write("block.nft", """\
table ip strict {
  chain input { type filter hook input priority filter; policy drop;
    iifname "lo" accept
    tcp dport { 22, 443 } accept
  }
}
table ip6 dropper {
  chain input { type filter hook input priority 10; policy accept;
    tcp dport 993 drop
  }
}
""")])
        self.assertEqual(self.mw(self.ns.run, "apply", policy=self.policy).returncode, 0)
        rc, j = self.mw_json(self.ns.run, "check", policy=self.policy)
        self.assertEqual(rc, 2)
        self.assertTrue(j["in_sync"])
        got = {(c["port"], c["family"], c["where"], c["certainty"]) for c in j["conflicts"]}
        self.assertIn((993, "ipv4", "table ip strict chain input", "blocks"), got)
        self.assertIn((993, "ipv6", "table ip6 dropper chain input", "blocks"), got)
        for c in j["conflicts"]:
            self.assertTrue(c["fix"], c)
            if c["port"] == 993:
                self.assertEqual((c["kind"], c["owner"]), ("open-port-blocked", c["where"].split(" chain ")[0]), c)
        # The strict table's policy drop also blocks the allowlisted source of closed 143.
        self.assertIn((143, "ipv4", "allowlist-blocked"), {(c["port"], c["family"], c["kind"]) for c in j["conflicts"]})
        # The admin's 22 accept in table inet admin never reads as a conflict.
        self.assertFalse(any("admin" in c["where"] for c in j["conflicts"]))

    def test_set_lookup_accepting_the_port_is_no_conflict(self):
        self.ns.run(["nft", "-f", self.write("ok.nft", """\
table inet strict {
  chain input { type filter hook input priority filter; policy drop;
    tcp dport { 22, 993 } accept
  }
}
""")])
        rc, j = self.mw_json(self.ns.run, "check", policy=self.policy)
        self.assertEqual(rc, 2)  # drift: nothing applied yet
        self.assertEqual([c for c in j["conflicts"] if c["port"] == 993], [])


class CheckProbes(MailwardCase):
    def test_check_probes_the_open_ports(self):
        ns = Sandbox()
        self.addCleanup(ns.close)
        policy = self.write("policy.yaml", POLICY)
        self.mw(ns.run, "apply", policy=policy, check=True)
        rc, j = self.mw_json(ns.run, "check", policy=policy)
        self.assertEqual(rc, 2)  # nothing listens on 993
        self.assertTrue(j["in_sync"])
        self.assertEqual([(p["port"], p["state"], p["as_policy"]) for p in j["probes"]], [(993, "closed", False)])
        srv = subprocess.Popen(["nsenter", "-t", str(ns.pid), "-n", "python3", "-c",
                                "import socket,time;s=socket.socket();s.bind(('127.0.0.1',993));s.listen();"
                                "print('ready',flush=True);time.sleep(60)"], stdout=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (srv.kill(), srv.wait(), srv.stdout.close()))
        self.assertEqual(srv.stdout.readline().strip(), "ready")
        rc, j = self.mw_json(ns.run, "check", policy=policy)
        # Open, but no TLS service answers: still reported.
        self.assertEqual((j["probes"][0]["state"], j["probes"][0]["as_policy"]), ("open", False))
        rc, j = self.mw_json(ns.run, "check", "--no-probe", policy=policy)
        self.assertEqual((rc, j["probes"]), (0, []))


class Rollback(MailwardCase):
    def test_rollback_restores_each_previous_state_byte_for_byte(self):
        ns = Sandbox()
        self.addCleanup(ns.close)
        first = self.write("first.yaml", POLICY)
        second = self.write("second.yaml", POLICY.replace("state: open", "state: open\n    rate_limit: 5/second")
                            .replace("- " + ALLOWED_V4, "- 203.0.113.0/24\n    - " + ALLOWED_V4))
        self.assertEqual(self.mw(ns.run, "rollback").returncode, 1)  # nothing to roll back to
        self.mw(ns.run, "apply", policy=first, check=True)
        state_a = ns.run(["nft", "list", "ruleset"]).stdout
        self.mw(ns.run, "apply", policy=second, check=True)
        self.assertNotEqual(ns.run(["nft", "list", "ruleset"]).stdout, state_a)
        self.mw(ns.run, "apply", policy=second, check=True)  # in sync: no snapshot taken
        self.mw(ns.run, "rollback", check=True)
        self.assertEqual(ns.run(["nft", "list", "ruleset"]).stdout, state_a)
        self.mw(ns.run, "rollback", check=True)  # before the first apply: no table at all
        self.assertEqual(ns.run(["nft", "list", "ruleset"]).stdout, "")

    def test_snapshots_listed_and_rollback_to_an_id_says_when_the_policy_differs(self):
        ns = Sandbox()
        self.addCleanup(ns.close)
        policies = [self.write(f"p{i}.yaml", POLICY.replace("state: open", f"state: open\n    rate_limit: {i}/second"))
                    for i in (1, 2, 3)]
        states = []
        for p in policies:
            states.append(ns.run(["nft", "list", "ruleset"]).stdout)
            self.mw(ns.run, "apply", "--no-probe", policy=p, check=True)
        rc, j = self.mw_json(ns.run, "snapshots")
        self.assertEqual(rc, 0, j)
        self.assertEqual([s["id"] for s in j["snapshots"]], [1, 2, 3])
        self.assertTrue(all(s["backend"] == "nftables" and s["committed"] for s in j["snapshots"]), j)
        # An unknown id changes nothing and lists what there is.
        before = ns.run(["nft", "list", "ruleset"]).stdout
        p = self.mw(ns.run, "rollback", "--to", "9", policy=policies[2])
        self.assertEqual(p.returncode, 1)
        self.assertIn("no snapshot 9", p.stderr)
        self.assertIn("there are: 1, 2, 3", p.stderr)
        self.assertEqual(ns.run(["nft", "list", "ruleset"]).stdout, before)
        # --to 2: the state before the second apply; snapshots 2 and 3 go; the policy now differs.
        rc, j = self.mw_json(ns.run, "rollback", "--to", "2", policy=policies[2])
        self.assertEqual(rc, 0, j)
        self.assertEqual(ns.run(["nft", "list", "ruleset"]).stdout, states[1])
        self.assertGreater(j["policy_changes"], 0)
        text = self.mw(ns.run, "snapshots").stdout
        self.assertIn("1 ", text)
        self.assertNotIn("\n2 ", text)
        self.assertEqual(self.mw(ns.run, "rollback", policy=policies[0]).returncode, 0)
        self.assertEqual(ns.run(["nft", "list", "ruleset"]).stdout, "")


class Drift(MailwardCase):
    def setUp(self):
        super().setUp()
        self.ns = Sandbox()
        self.addCleanup(self.ns.close)
        self.policy = self.write("policy.yaml", POLICY)
        self.assertEqual(self.mw(self.ns.run, "apply", policy=self.policy).returncode, 0)
        self.good = self.ns.run(["nft", "list", "table", "inet", "mailward"]).stdout

    def assert_repaired(self, expect_ops):
        rc, j = self.mw_json(self.ns.run, "check", "--no-probe", policy=self.policy)
        self.assertEqual(rc, 2, j)
        self.assertTrue(j["drift"])
        ops = sorted((c["op"], c["object"]) for c in j["changes"])
        self.assertEqual(ops, sorted(expect_ops), j["changes"])
        rc, j = self.mw_json(self.ns.run, "apply", policy=self.policy)
        self.assertEqual(rc, 0, j)
        self.assertTrue(j["verified"])
        self.assertEqual(self.mw(self.ns.run, "check", "--no-probe", policy=self.policy).returncode, 0)
        self.assertEqual(self.ns.run(["nft", "list", "table", "inet", "mailward"]).stdout, self.good)

    def test_table_deleted(self):
        self.ns.run(["nft", "delete", "table", "inet", "mailward"])
        rc, j = self.mw_json(self.ns.run, "plan", policy=self.policy)
        self.assertEqual(rc, 2)
        self.assertEqual(j["changes"][0], {"op": "add", "object": "table", "name": "inet mailward", "detail": ""})
        self.mw(self.ns.run, "apply", policy=self.policy, check=True)
        self.assertEqual(self.ns.run(["nft", "list", "table", "inet", "mailward"]).stdout, self.good)

    def test_chain_flushed(self):
        self.ns.run(["nft", "flush", "chain", "inet", "mailward", "prerouting"])
        self.assert_repaired([("add", "rule")] * 7)  # loopback, not-local, 110, 143 allow v4/v6, 143 closed, 993 open

    def test_element_removed(self):
        self.ns.run(["nft", "delete", "element", "inet", "mailward", "allow_office_hosts_v4", "{", ALLOWED_V4, "}"])
        self.assert_repaired([("add", "elements")])

    def test_rule_added_by_hand(self):
        self.ns.run(["nft", "insert", "rule", "inet", "mailward", "prerouting", "tcp", "dport", "143", "accept"])
        self.assert_repaired([("delete", "rule")])

    def test_rule_edited_by_hand(self):
        out = self.ns.run(["nft", "-a", "list", "chain", "inet", "mailward", "prerouting"]).stdout
        handle = [l for l in out.splitlines() if "mailward:143:closed" in l][0].split("# handle ")[1]
        self.ns.run(["nft", "replace", "rule", "inet", "mailward", "prerouting", "handle", handle, "tcp", "dport", "143",
                     "ct", "state", "new", "accept", "comment", "\"mailward:143:closed\""])
        self.assert_repaired([("delete", "rule"), ("add", "rule")])

    def test_foreign_chain_recreates_table(self):
        self.ns.run(["nft", "add", "chain", "inet", "mailward", "sneaky"])
        rc, j = self.mw_json(self.ns.run, "plan", policy=self.policy)
        self.assertEqual(rc, 2)
        self.assertEqual(j["changes"][0]["op"], "replace")
        self.mw(self.ns.run, "apply", policy=self.policy, check=True)
        self.assertEqual(self.ns.run(["nft", "list", "table", "inet", "mailward"]).stdout, self.good)


if __name__ == "__main__":
    unittest.main()
