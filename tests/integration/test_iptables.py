"""The iptables backend against real iptables (nft-based, and legacy), ip6tables and ipset, in
namespaces: reachability over IPv4 and IPv6 from a client namespace, the host's other rules
(a fail2ban chain, Docker chains, the admin's ACCEPT 22) untouched, drift found and repaired,
rollback, an apply that fails half-way put back, a 10,000-address allowlist kept in an ipset,
and the DNAT path: a real dockerd publishing the mail ports of a container (DnatPath)."""
import os
import re
import time
import unittest

from pidns import PrivatePids
from mwtest import (fault_env, ALLOWED_V4, ALLOWED_V6, HOST_V4, HOST_V6, PLAIN_V4, PLAIN_V6, Dockerd, docker_rules, have_docker,
                    assert_mail_policy_reachability, MailwardCase, run, Sandbox, Topology)

POLICY = """\
version: 1
backend: iptables
allowlists:
  office:
    - {allowed_v4}
    - {allowed_v6}/128
    - 203.0.113.0/24
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

# The host's own rules, as fail2ban, Docker and an admin write them.
HOST_RULES = [
    ["-N", "f2b-dovecot"],
    ["-A", "f2b-dovecot", "-s", "{banned}", "-j", "REJECT"],
    ["-A", "f2b-dovecot", "-j", "RETURN"],
    ["-A", "INPUT", "-p", "tcp", "-m", "multiport", "--dports", "143,993", "-j", "f2b-dovecot"],
    ["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
    ["-N", "DOCKER-USER"],
    ["-A", "DOCKER-USER", "-j", "RETURN"],
    ["-A", "FORWARD", "-j", "DOCKER-USER"],
    ["-t", "nat", "-N", "DOCKER"],
    ["-t", "nat", "-A", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "DOCKER"],
]


class Variant:
    """Which iptables the host uses: the nft-based default, or legacy (MAILWARD_IPTABLES)."""
    variant = "nft"

    def tool(self, name):
        return name.replace("tables", "tables-" + self.variant, 1)

    def env_runner(self, runner):
        self.pids = PrivatePids()
        self.addCleanup(self.pids.close)
        def r(argv, **kw):
            if argv and argv[0].endswith("mailward"):
                # A PID namespace of its own: firewalld that other suites run on this machine (in
                # their own namespaces) is not this host's manager.
                argv = self.pids.prefix() + ["env", "MAILWARD_IPTABLES=" + self.variant] + argv
            return runner(argv, **kw)
        return r

    def add_host_rules(self, runner, banned_v4="192.0.2.66", banned_v6="2001:db8:66::1"):
        for tool, banned in (("iptables", banned_v4), ("ip6tables", banned_v6)):
            for rule in HOST_RULES:
                runner([self.tool(tool)] + [a.format(banned=banned) for a in rule])

    def save_all(self, runner):
        """Everything but mailward's own lines, without counters and timestamps. A table left
        with nothing but its empty built-in chains accepting (mangle or nat once mailward's chain
        is gone: iptables keeps a table it has made) counts as absent."""
        out = []
        for tool in ("iptables-save", "ip6tables-save"):
            table = []
            for line in runner([self.tool(tool)]).stdout.splitlines():
                if line.startswith("#") or "MAILWARD" in line:
                    continue
                table.append(re.sub(r" \[\d+:\d+\]$", "", line))
                if line == "COMMIT":
                    if not all(l.startswith("*") or l == "COMMIT" or re.fullmatch(r":[A-Z]+ ACCEPT", l)
                               for l in table):
                        out += table
                    table = []
        return out

    def own_state(self, runner):
        lines = []
        for tool in ("iptables-save", "ip6tables-save"):
            lines += [l for l in runner([self.tool(tool)]).stdout.splitlines() if "MAILWARD" in l]
        sets = [l for l in runner(["ipset", "save"]).stdout.splitlines()
                if l.split()[1].startswith("mw")]
        # initval is random per create: not part of what mailward promises.
        return lines, sorted(re.sub(r" initval 0x[0-9a-f]+", "", s) for s in sets)


class Reachability(Variant, MailwardCase):
    def setUp(self):
        super().setUp()
        self.topo = Topology()
        self.addCleanup(self.topo.close)
        self.topo.serve([110, 143, 993])
        self.host = self.env_runner(self.topo.in_host)
        self.policy = self.write("policy.yaml", POLICY)
        self.add_host_rules(self.topo.in_host)

    def test_reachability_second_apply_and_other_rules(self):
        before = self.topo.reach()
        self.assertTrue(all(v == "open" for v in before.values()), before)
        others = self.save_all(self.topo.in_host)
        p = self.mw(self.host, "apply", policy=self.policy)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        after = self.topo.reach()
        assert_mail_policy_reachability(self, after)
        lo = self.topo.in_host(["python3", "-c",
                                "import socket;s=socket.create_connection(('127.0.0.1',143),1);print(s.recv(9))"])
        self.assertIn("OK", lo.stdout)
        # The jump is first in INPUT, both families; the host's rules are exactly as they were.
        for tool in ("iptables", "ip6tables"):
            first = self.topo.in_host([self.tool(tool), "-S", "INPUT"]).stdout.splitlines()[1]
            self.assertIn("-j MAILWARD", first)
        self.assertEqual(self.save_all(self.topo.in_host), others)
        # A second apply changes nothing.
        rc, j = self.mw_json(self.host, "apply", policy=self.policy)
        self.assertEqual((rc, j["applied"], j["changes"], j["backend"]), (0, False, [], "iptables"))
        self.assertEqual(self.save_all(self.topo.in_host), others)

    def test_fail2ban_ban_still_applies_to_an_open_port(self):
        # mailward's chain never ACCEPTs: a banned source stays banned on 993.
        self.topo.in_host([self.tool("iptables"), "-I", "f2b-dovecot", "1", "-s", PLAIN_V4, "-p", "tcp", "-j", "REJECT",
                           "--reject-with", "tcp-reset"])
        self.assertEqual(self.mw(self.host, "apply", policy=self.policy).returncode, 0)
        self.assertEqual(self.topo.connect(HOST_V4, 993, PLAIN_V4), "closed")
        self.assertEqual(self.topo.connect(HOST_V4, 993, ALLOWED_V4), "open")


class ReachabilityLegacy(Reachability):
    variant = "legacy"


JUMP_MANGLE = ["PREROUTING", "-p", "tcp", "-m", "addrtype", "--dst-type", "LOCAL", "-m", "conntrack", "--ctstate", "NEW",
               "-m", "comment", "--comment", "mailward:jump", "-j", "MAILWARD"]


@unittest.skipUnless(have_docker(), "docker.io and busybox-static are needed")
class DnatPath(Variant, MailwardCase):
    """A container publishing 143, 110 and 993 on the host's addresses, IPv4 and IPv6 (DNAT in
    nat PREROUTING, then FORWARD): the policy holds for it as for a local service."""

    def setUp(self):
        super().setUp()
        self.topo = Topology()
        self.addCleanup(self.topo.close)
        self.docker = Dockerd(self.topo, self.dir, iptables_variant=self.variant, ipv6_cidr="2001:db8:1::/64")
        self.addCleanup(self.docker.close)
        self.host = self.env_runner(self.topo.in_host)
        # 110 (reject) has an allowlist too: its allowlisted sources must still be DNATed.
        self.policy = self.write("policy.yaml", POLICY.replace("    action: reject\n",
                                                               "    action: reject\n    allow: [office]\n"))

    def docker_tables(self):
        return {(tool, t): docker_rules(self.topo.in_host([self.tool(tool), "-t", t]).stdout)
                for tool in ("iptables-save", "ip6tables-save") for t in ("nat", "filter")}

    def greeting(self, port, source, wait=0):
        """The container's greeting as seen from `source` (to the host address of its family);
        with `wait`, retried until it comes (IPv6 addresses need their duplicate detection)."""
        dest = HOST_V6 if ":" in source else HOST_V4
        code = ("import socket;s=socket.socket(%s);s.settimeout(2);s.bind((%r,0));s.connect((%r,%d));print(s.recv(64))"
                % ("socket.AF_INET6" if ":" in source else "socket.AF_INET", source, dest, port))
        deadline = time.time() + wait
        while True:
            out = run(["ip", "netns", "exec", self.topo.client, "python3", "-c", code], check=False).stdout
            if "OK" in out or time.time() >= deadline:
                return out
            time.sleep(0.2)

    def test_closed_ports_hold_for_published_containers(self):
        cid, _ = self.docker.serve([143, 110, 993])
        # Docker's DNAT bypasses INPUT: before mailward, everyone reaches the container.
        for src in (PLAIN_V4, PLAIN_V6):
            self.assertIn("container", self.greeting(143, src, wait=30))
            self.assertIn("container", self.greeting(110, src, wait=30))
        docker_before = self.docker_tables()
        rc, j = self.mw_json(self.host, "apply", policy=self.policy)
        self.assertEqual(rc, 0, j)
        names = [c["name"] for c in j["changes"]]
        for n in ("iptables mangle mailward:143:closed", "iptables nat mailward:110:closed",
                  "ip6tables mangle mailward:143:closed", "ip6tables nat mailward:110:closed"):
            self.assertIn(n, names)
        for plain, allowed, host in ((PLAIN_V4, ALLOWED_V4, HOST_V4), (PLAIN_V6, ALLOWED_V6, HOST_V6)):
            self.assertEqual(self.topo.connect(host, 143, plain), "filtered")   # dropped in mangle
            self.assertIn("container", self.greeting(143, allowed))             # the allowlist gets through
            self.assertEqual(self.topo.connect(host, 110, plain), "closed")     # kept out of DNAT, reset in INPUT
            self.assertIn("container", self.greeting(110, allowed))             # DNATed as before
            self.assertIn("container", self.greeting(993, plain))               # open stays open
        # Docker's own rules are byte-identical; mailward's jumps are first in PREROUTING.
        self.assertEqual(self.docker_tables(), docker_before)
        for tool in ("iptables", "ip6tables"):
            for table in ("mangle", "nat"):
                first = self.topo.in_host([self.tool(tool), "-t", table, "-S", "PREROUTING"]).stdout.splitlines()[1]
                self.assertIn("mailward:jump", first)
        # A container published after the apply is covered without a re-apply, and the plan
        # stays in sync though Docker rewrote its own rules.
        self.docker.remove(cid)
        self.docker.serve([143, 110], greeting="later")
        self.assertIn("later", self.greeting(143, ALLOWED_V4, wait=30))
        self.assertIn("later", self.greeting(143, ALLOWED_V6, wait=30))
        self.assertEqual(self.topo.connect(HOST_V4, 143, PLAIN_V4), "filtered")
        self.assertEqual(self.topo.connect(HOST_V6, 143, PLAIN_V6), "filtered")
        self.assertEqual(self.topo.connect(HOST_V4, 110, PLAIN_V4), "closed")
        rc, j = self.mw_json(self.host, "plan", policy=self.policy)
        self.assertEqual((rc, j["in_sync"]), (0, True), j)
        # Someone deletes the mangle jump: drift, repaired by the next apply.
        self.topo.in_host([self.tool("iptables"), "-t", "mangle", "-D"] + JUMP_MANGLE)
        self.assertIn("later", self.greeting(143, PLAIN_V4))
        rc, j = self.mw_json(self.host, "plan", policy=self.policy)
        self.assertEqual([(c["op"], c["name"]) for c in j["changes"]], [("add", "iptables mangle mailward:jump")])
        self.assertEqual(self.mw(self.host, "apply", policy=self.policy).returncode, 0)
        self.assertEqual(self.topo.connect(HOST_V4, 143, PLAIN_V4), "filtered")
        # Rollback: first to the drifted state (the mangle chain without its jump), then to
        # before the first apply: the mangle and nat chains go too, and only they.
        docker_now = self.docker_tables()
        self.mw(self.host, "rollback", check=True)
        mangle = self.topo.in_host([self.tool("iptables-save"), "-t", "mangle"]).stdout
        self.assertIn(":MAILWARD", mangle)
        self.assertNotIn("-j MAILWARD", mangle)
        p = self.mw(self.host, "rollback")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        for tool in ("iptables-save", "ip6tables-save"):
            self.assertNotIn("MAILWARD", self.topo.in_host([self.tool(tool)]).stdout)
        self.assertEqual(self.docker_tables(), docker_now)
        self.assertIn("later", self.greeting(143, PLAIN_V4))
        self.assertIn("later", self.greeting(143, PLAIN_V6))


class DnatPathLegacy(DnatPath):
    variant = "legacy"


class Behaviour(Variant, MailwardCase):
    def setUp(self):
        super().setUp()
        self.ns = Sandbox()
        self.addCleanup(self.ns.close)
        self.run_ = self.env_runner(self.ns.run)
        self.policy = self.write("policy.yaml", POLICY)
        self.add_host_rules(self.ns.run)

    def test_conflicts_from_the_hosts_rules(self):
        self.ns.run([self.tool("iptables"), "-P", "INPUT", "DROP"])
        self.ns.run([self.tool("ip6tables"), "-A", "INPUT", "-p", "tcp", "--dport", "993", "-j", "DROP"])
        rc, j = self.mw_json(self.run_, "plan", policy=self.policy)
        got = {(c["port"], c["family"], c["where"], c["certainty"]) for c in j["conflicts"]}
        # Each names the ruleset it is in: "iptables-legacy filter" on the legacy tables.
        legacy = "-legacy" if self.variant == "legacy" else ""
        self.assertIn((993, "ipv4", f"iptables{legacy} filter chain INPUT", "blocks"), got)
        self.assertIn((993, "ipv6", f"ip6tables{legacy} filter chain INPUT", "blocks"), got)
        # fail2ban's chain rejects only banned sources: a source restriction, not a conflict.
        self.assertFalse([c for c in j["conflicts"] if "f2b" in c["where"]], j["conflicts"])
        self.assertIn((993, "ipv4", "fail2ban jail dovecot"),
                      {(r["port"], r["family"], r["owner"]) for r in j["source_restrictions"]})
        # Another tool's native nftables table is judged too; iptables-nft's own tables are not
        # judged twice.
        self.ns.run(["nft", "add table inet fw"])
        self.ns.run(["nft", "add chain inet fw input { type filter hook input priority 0 ; policy accept ; }"])
        self.ns.run(["nft", "add rule inet fw input tcp dport 993 drop"])
        rc, j = self.mw_json(self.run_, "plan", policy=self.policy)
        got = {(c["port"], c["family"], c["where"], c["certainty"]) for c in j["conflicts"]}
        self.assertIn((993, "ipv4", "table inet fw chain input", "blocks"), got)
        self.assertIn((993, "ipv6", "table inet fw chain input", "blocks"), got)
        self.assertFalse([c for c in j["conflicts"] if c["where"].startswith("table ip filter")], j["conflicts"])
        self.ns.run(["nft", "delete table inet fw"])
        # Once the admin accepts 993 the policy DROP no longer blocks it.
        self.ns.run([self.tool("iptables"), "-A", "INPUT", "-p", "tcp", "--dport", "993", "-j", "ACCEPT"])
        rc, j = self.mw_json(self.run_, "plan", policy=self.policy)
        self.assertFalse([c for c in j["conflicts"] if c["family"] == "ipv4" and c["port"] == 993], j)

    def test_drift_found_and_repaired(self):
        self.mw(self.run_, "apply", policy=self.policy, check=True)
        good = self.own_state(self.ns.run)
        ipt = self.tool("iptables")
        damage = [
            ([ipt, "-D", "INPUT", "-m", "comment", "--comment", "mailward:jump", "-j", "MAILWARD"], [("add", "rule")]),
            ([ipt, "-F", "MAILWARD"], None),
            ([ipt, "-R", "MAILWARD", "3", "-p", "tcp", "--dport", "143", "-j", "RETURN"], None),
            (["ipset", "del", "mw_office_hosts_v4", ALLOWED_V4], [("add", "elements")]),
            ([self.tool("ip6tables"), "-I", "MAILWARD", "1", "-p", "tcp", "--dport", "143", "-j", "RETURN"],
             [("delete", "rule")]),
        ]
        for cmd, ops in damage:
            self.ns.run(cmd)
            rc, j = self.mw_json(self.run_, "check", "--no-probe", policy=self.policy)
            self.assertEqual(rc, 2, cmd)
            self.assertTrue(j["drift"], cmd)
            if ops:
                self.assertEqual(sorted((c["op"], c["object"]) for c in j["changes"]), ops, j["changes"])
            rc, j = self.mw_json(self.run_, "apply", policy=self.policy)
            self.assertEqual(rc, 0, j)
            self.assertTrue(j["verified"])
            self.assertEqual(self.own_state(self.ns.run), good, cmd)

    def test_rollback_and_failed_apply_put_back(self):
        self.assertEqual(self.mw(self.run_, "rollback").returncode, 1)
        others = self.save_all(self.ns.run)
        self.mw(self.run_, "apply", policy=self.policy, check=True)
        state_a = self.own_state(self.ns.run)
        second = self.write("second.yaml", POLICY.replace("state: open", "state: open\n    rate_limit: 5/second")
                            .replace("- 203.0.113.0/24", "- 203.0.113.0/25\n    - 192.0.2.9"))
        # A failure in ip6tables-restore after iptables-restore went through: all put back.
        env = fault_env("ip6tables-restore")
        p = self.mw(lambda a, **kw: self.run_(a, env=env, **kw), "apply", policy=second)
        self.assertEqual(p.returncode, 1)
        self.assertIn("put back", p.stderr)
        self.assertEqual(self.own_state(self.ns.run), state_a)
        self.mw(self.run_, "apply", policy=second, check=True)
        self.assertNotEqual(self.own_state(self.ns.run), state_a)
        self.mw(self.run_, "rollback", check=True)
        self.assertEqual(self.own_state(self.ns.run), state_a)
        self.mw(self.run_, "rollback", check=True)
        self.assertEqual(self.own_state(self.ns.run), ([], []))
        self.assertEqual(self.save_all(self.ns.run), others)

    def test_unconfirmed_apply_reverts(self):
        self.mw(self.run_, "apply", policy=self.policy, check=True)
        state_a = self.own_state(self.ns.run)
        second = self.write("second.yaml", POLICY.replace("- 203.0.113.0/24", "- 192.0.2.9"))
        rc, j = self.mw_json(self.run_, "apply", "--confirm", "2", policy=second)
        self.assertEqual((rc, j["confirm"]["pending"]), (0, True), j)
        self.assertNotEqual(self.own_state(self.ns.run), state_a)
        deadline = time.time() + 20
        while time.time() < deadline and self.own_state(self.ns.run) != state_a:
            time.sleep(0.2)
        self.assertEqual(self.own_state(self.ns.run), state_a, "not reverted")
        with open(os.path.join(self.state, "confirm.log")) as log:
            self.assertIn("not confirmed in time: reverted", log.read())

    def test_bad_policy_changes_nothing(self):
        self.mw(self.run_, "apply", policy=self.policy, check=True)
        before = (self.save_all(self.ns.run), self.own_state(self.ns.run))
        bad = self.write("bad.yaml", POLICY.replace("203.0.113.0/24", "203.0.113.0/33"))
        p = self.mw(self.run_, "apply", policy=bad)
        self.assertEqual(p.returncode, 1)
        self.assertIn("bad.yaml:7:7", p.stderr)
        self.assertEqual((self.save_all(self.ns.run), self.own_state(self.ns.run)), before)

    def test_ten_thousand_addresses_stay_in_an_ipset(self):
        addrs = [f"10.{i // 250}.{i % 250}.{1 + i % 7}" for i in range(10000)]
        big = self.write("big.yaml", POLICY.replace("    - 203.0.113.0/24\n",
                                                    "".join(f"    - {a}\n" for a in addrs)))
        self.mw(self.run_, "apply", policy=big, check=True)
        rules = self.ns.run([self.tool("iptables"), "-S", "MAILWARD"]).stdout.splitlines()
        self.assertLess(len(rules), 12)
        self.assertIn("Number of entries: 10001", self.ns.run(["ipset", "list", "-t", "mw_office_hosts_v4"]).stdout)
        # One address edited: one element each way, nothing else.
        with open(big) as f:
            edited = self.write("edited.yaml", f.read().replace(f"- {addrs[5000]}\n", "- 10.99.99.99\n"))
        rc, j = self.mw_json(self.run_, "plan", policy=edited)
        self.assertEqual(sorted((c["op"], c["object"], c["count"]) for c in j["changes"]),
                         [("add", "elements", 1), ("delete", "elements", 1)])
        self.mw(self.run_, "apply", policy=edited, check=True)
        self.assertEqual(self.mw(self.run_, "plan", policy=edited).returncode, 0)


class BehaviourLegacy(Behaviour):
    variant = "legacy"


if __name__ == "__main__":
    unittest.main()
