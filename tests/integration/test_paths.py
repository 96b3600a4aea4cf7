"""Every packet path, against real peers in namespaces (TESTING.md): a real dockerd publishing
mail ports of containers (DNAT + FORWARD), real fail2ban (nftables and iptables banactions)
banning from real Dovecot log lines, real firewalld with a private D-Bus, real UFW enabled,
disabled and never enabled. Every verdict of `check` and `explain` is compared with a real TCP
connection from the client namespace.

The policy: 143 closed but for the allowlist office (198.51.100.3, 2001:db8::3), 993 open,
110 closed with a reject."""
import json
import unittest

from mwtest import (ALLOWED_V4, ALLOWED_V6, HOST_V4, HOST_V6, PLAIN_V4, PLAIN_V6, Dockerd, Fail2ban, Firewalld,
                    MailwardCase, PrivateNs, Topology, Ufw, assert_mail_policy_reachability)

POLICY = """\
version: 1
backend: {backend}
allowlists:
  office:
    - {allowed_v4}/32
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
"""


def host_of(src):
    return HOST_V6 if ":" in src else HOST_V4


def family_of(src):
    return "ipv6" if ":" in src else "ipv4"


def conflicts(j, kind=None, port=None):
    return [c for c in (j or {}).get("conflicts", [])
            if (kind is None or c.get("kind") == kind) and (port is None or c.get("port") == port)]


class PathsCase(MailwardCase):
    """A fresh Topology per test; the peers a test starts are closed (by addCleanup) before the
    temp dir holding their state goes."""
    BACKEND = "nftables"

    def setUp(self):
        super().setUp()
        self.addCleanup(self.tmp.cleanup)  # runs last: after every peer's close()
        self.topo = Topology()
        self.addCleanup(self.topo.close)
        self.policy = self.write("policy.yaml", POLICY.format(backend=self.BACKEND, allowed_v4=ALLOWED_V4,
                                                              allowed_v6=ALLOWED_V6))

    def tearDown(self):
        pass  # the temp dir is removed by the cleanup registered first

    # mailward, run where the peer's processes and files are visible (self.h)
    def apply(self):
        rc, j = self.mw_json(self.h, "apply", policy=self.policy)
        self.assertEqual(rc, 0, j)
        return j

    def check(self):
        return self.mw_json(self.h, "check", "--no-probe", policy=self.policy)

    def assert_clean(self):
        rc, j = self.check()
        self.assertEqual(j["conflicts"] if j else None, [], j)
        self.assertEqual(rc, 0, j)
        return j

    def explain(self, port, src):
        """`mailward explain PORT --from SRC --family F --format json` -> (rc, document)."""
        rc, j = self.mw_json(self.h, "explain", str(port), "--from", src, "--family", family_of(src),
                             policy=self.policy)
        self.assertIn(rc, (0, 2), j)
        for key in ("verdict", "destination", "path", "decided_by"):
            self.assertIn(key, j)
        self.assertIn(j["verdict"], ("reaches", "blocked", "may be blocked"))
        for step in j["path"]:
            self.assertTrue({"table", "chain", "rule", "action"} <= set(step), step)
        return rc, j

    def assert_explain_matches_connection(self, port, src, verdict, policy_says):
        """explain's verdict is `verdict`, a real connection from src agrees, and the exit code is
        0 exactly when that is what the policy says for src (policy_says: True/False)."""
        rc, j = self.explain(port, src)
        state = self.topo.connect(host_of(src), port, src)
        self.assertEqual(j["verdict"], verdict, j)
        self.assertEqual(state == "open", verdict == "reaches", f"explain says {verdict}, a connection {state}")
        self.assertEqual(rc, 0 if policy_says else 2, j)
        return j


# ------------------------------------------------------------------------------------------ Docker

class DockerTests:
    """A real dockerd in the host namespace publishing 143/993/110 of containers. `closed` must
    hold on the DNAT path to the containers too, and `check` must see the bypass. Mixed into
    one TestCase per backend."""

    def setUp(self):
        super().setUp()
        self.dockerd = Dockerd(self.topo, self.dir)
        self.addCleanup(self.dockerd.close)
        self.h = self.dockerd.ns.run

    def docker_rules(self, save):
        """What must stay byte-identical in iptables-save (nat, filter; v4, v6): everything
        with the nftables backend, all but mailward's lines with the iptables backend."""
        return [l for l in save if "mailward" not in l.lower()] if self.BACKEND == "iptables" else save

    def publish_mail_ports(self):
        for port in (143, 993, 110):
            self.dockerd.publish(port)

    def assert_docker_bypass_reported(self):
        rc, j = self.check()
        self.assertEqual(rc, 2, j)
        found = conflicts(j, "closed-port-reachable", 143)
        self.assertTrue(found, j["conflicts"])
        self.assertTrue(any("docker" in c.get("owner", "").lower() for c in found), found)
        self.assertTrue(all(c.get("fix", "").strip() for c in found), found)

    def test_before_apply_check_and_explain_see_the_docker_bypass(self):
        self.publish_mail_ports()
        self.assertEqual(self.topo.greeting(HOST_V4, 143, PLAIN_V4), ("open", "* OK container 143"))
        with self.subTest("check reports the Docker bypass"):
            self.assert_docker_bypass_reported()
        with self.subTest("explain follows the DNAT"):
            j = self.assert_explain_matches_connection(143, PLAIN_V4, "reaches", policy_says=False)
            self.assertRegex(j["destination"], r"^172\.17\.\d+\.\d+:143$")

    def test_apply_closes_143_on_the_dnat_path_and_keeps_docker_rules(self):
        self.publish_mail_ports()
        before = self.dockerd.iptables_save()
        self.apply()
        with self.subTest("real connections as the policy says"):
            assert_mail_policy_reachability(self, self.topo.reach())
        with self.subTest("the containers answer"):  # through DNAT (v4) or docker-proxy (v6)
            self.assertEqual(self.topo.greeting(HOST_V4, 143, ALLOWED_V4), ("open", "* OK container 143"))
            self.assertEqual(self.topo.greeting(HOST_V6, 143, ALLOWED_V6), ("open", "* OK container 143"))
            self.assertEqual(self.topo.greeting(HOST_V4, 993, PLAIN_V4), ("open", "* OK container 993"))
        with self.subTest("Docker's rules untouched"):
            self.assertEqual(self.docker_rules(self.dockerd.iptables_save()), self.docker_rules(before))
        with self.subTest("check clean"):
            self.assert_clean()
        with self.subTest("explain agrees with the connections"):
            self.assert_explain_matches_connection(143, PLAIN_V4, "blocked", policy_says=True)
            j = self.assert_explain_matches_connection(143, ALLOWED_V4, "reaches", policy_says=True)
            self.assertRegex(j["destination"], r"^172\.17\.\d+\.\d+:143$")
            self.assert_explain_matches_connection(993, PLAIN_V4, "reaches", policy_says=True)
            self.assert_explain_matches_connection(143, PLAIN_V6, "blocked", policy_says=True)

    def test_container_published_after_apply_is_covered_without_reapply(self):
        self.apply()
        self.dockerd.publish(143, wait_from=ALLOWED_V4)
        self.dockerd.publish(993)
        with self.subTest("real connections"):
            self.assertEqual(self.topo.connect(HOST_V4, 143, PLAIN_V4), "filtered")
            self.assertEqual(self.topo.connect(HOST_V6, 143, PLAIN_V6), "filtered")
            self.assertEqual(self.topo.greeting(HOST_V4, 143, ALLOWED_V4), ("open", "* OK container 143"))
            self.assertEqual(self.topo.greeting(HOST_V4, 993, PLAIN_V4), ("open", "* OK container 993"))
        with self.subTest("check clean"):
            self.assert_clean()



class DockerNftables(DockerTests, PathsCase):
    BACKEND = "nftables"

    def test_table_removed_by_hand_is_reported_as_the_docker_bypass(self):
        self.publish_mail_ports()
        self.apply()
        self.assertEqual(self.topo.connect(HOST_V4, 143, PLAIN_V4), "filtered")
        self.h(["nft", "delete", "table", "inet", "mailward"])
        self.assertEqual(self.topo.greeting(HOST_V4, 143, PLAIN_V4), ("open", "* OK container 143"))
        self.assert_docker_bypass_reported()


class DockerIptables(DockerTests, PathsCase):
    BACKEND = "iptables"


class DockerUfw(DockerTests, PathsCase):
    """UFW (enabled, private /etc/ufw) in the same namespace as dockerd: the ufw-docker case."""
    BACKEND = "ufw"

    def setUp(self):
        super().setUp()
        self.ufw = Ufw(self.topo, self.dir, "enabled", ns=self.dockerd.ns)
        self.h = self.ufw.run

    def docker_rules(self, save):
        return self.dockerd.own_lines(save)  # UFW's chains change with mailward's rules


# ---------------------------------------------------------------------------------------- fail2ban

class Fail2banNftables(PathsCase):
    """A real fail2ban dovecot jail (ports 110,143,993,995) whose chain and set exist from the
    start: a ban list restricts some sources, it is not a conflict."""
    BANACTION = "nftables-multiport"

    def setUp(self):
        super().setUp()
        self.topo.serve([110, 143, 993])
        self.f2b = Fail2ban(self.topo, self.dir, self.BANACTION)
        self.addCleanup(self.f2b.close)
        self.h = self.f2b.ns.run

    def test_jail_running_nobody_banned_is_clean(self):
        self.apply()
        self.assertIn("f2b-", self.f2b.ruleset())
        with self.subTest("check clean"):
            self.assert_clean()
        with self.subTest("real connections as the policy says"):
            assert_mail_policy_reachability(self, self.topo.reach())
        with self.subTest("explain"):
            self.assert_explain_matches_connection(993, PLAIN_V4, "reaches", policy_says=True)

    def test_banned_source_is_blocked_but_not_a_conflict(self):
        self.apply()
        self.f2b.ban(PLAIN_V4)                 # a real Dovecot auth-failure line
        self.f2b.ban(PLAIN_V6, how="client")   # fail2ban-client set dovecot banip
        with self.subTest("check clean with bans"):
            self.assert_clean()
        with self.subTest("real connections: banned sources blocked, others reach"):
            self.assertNotEqual(self.topo.connect(HOST_V4, 993, PLAIN_V4), "open")
            self.assertNotEqual(self.topo.connect(HOST_V6, 993, PLAIN_V6), "open")
            self.assertEqual(self.topo.connect(HOST_V4, 993, ALLOWED_V4), "open")
            self.assertEqual(self.topo.connect(HOST_V6, 993, ALLOWED_V6), "open")
        with self.subTest("explain: the banned source blocked by fail2ban, another reaches"):
            rc, j = self.explain(993, PLAIN_V4)
            self.assertEqual(j["verdict"], "blocked", j)
            self.assertIn("f2b", json.dumps(j["decided_by"]), j)
            self.assert_explain_matches_connection(993, ALLOWED_V4, "reaches", policy_says=True)
        # Unbanned: the chain and the now empty set stay, still clean.
        self.f2b.unban(PLAIN_V4)
        with self.subTest("check clean after unban"):
            self.assert_clean()
        self.assertEqual(self.topo.connect(HOST_V4, 993, PLAIN_V4), "open")


class Fail2banIptables(Fail2banNftables):
    BANACTION = "iptables-multiport"


# --------------------------------------------------------------------------------------- firewalld

class FirewalldZone(PathsCase):
    """Real firewalld (nftables backend, default zone public: ssh and dhcpv6-client only)."""

    def setUp(self):
        super().setUp()
        self.topo.serve([110, 143, 993])
        self.fw = Firewalld(self.topo, self.dir)
        self.addCleanup(self.fw.close)
        self.h = self.fw.ns.run

    def test_stock_zone_blocks_imaps_and_the_allowlist(self):
        self.apply()
        rc, j = self.check()
        self.assertEqual(rc, 2, j)
        with self.subTest("993 blocked by the zone: kind, owner, fix"):
            found = conflicts(j, "open-port-blocked", 993)
            self.assertTrue(found, j["conflicts"])
            for c in found:
                self.assertEqual(c["certainty"], "blocks", c)
                self.assertIn("firewalld zone public", c["owner"], c)
                self.assertIn("firewall-cmd", c["fix"], c)
                self.assertTrue("--add-service=imaps" in c["fix"] or "--add-port=993/tcp" in c["fix"], c)
            self.assertEqual({c["family"] for c in found}, {"ipv4", "ipv6"}, found)
        with self.subTest("the allowlist of 143 blocked by the zone"):
            self.assertTrue(conflicts(j, "allowlist-blocked", 143), j["conflicts"])
        with self.subTest("the real connections agree"):
            for src in (PLAIN_V4, PLAIN_V6):
                self.assertNotEqual(self.topo.connect(host_of(src), 993, src, timeout=3), "open", src)
            for src in (ALLOWED_V4, ALLOWED_V6):
                self.assertNotEqual(self.topo.connect(host_of(src), 143, src, timeout=3), "open", src)
        with self.subTest("explain names the zone"):
            j = self.assert_explain_matches_connection(993, PLAIN_V4, "blocked", policy_says=False)
            self.assertIn("public", json.dumps(j["decided_by"]), j)
            self.assert_explain_matches_connection(143, ALLOWED_V4, "blocked", policy_says=False)

    def test_services_allowed_make_check_clean(self):
        self.apply()
        self.fw.add_service("imaps")
        rc, j = self.check()
        for src in (PLAIN_V4, PLAIN_V6, ALLOWED_V4, ALLOWED_V6):
            self.assertEqual(self.topo.connect(host_of(src), 993, src), "open", src)
        with self.subTest("no 993 conflict once imaps is allowed (rpfilter included)"):
            # firewalld's IPv6 reverse-path rule (fib saddr . mark . iif oif missing drop) only
            # drops spoofed sources: never a conflict.
            self.assertEqual(conflicts(j, port=993), [], j["conflicts"])
        with self.subTest("the allowlist of 143 still blocked by the zone"):
            self.assertTrue(conflicts(j, "allowlist-blocked", 143), j["conflicts"])
        self.fw.add_service("imap")
        with self.subTest("check clean with imap and imaps allowed"):
            self.assert_clean()
        with self.subTest("real connections as the policy says"):
            assert_mail_policy_reachability(self, self.topo.reach())
        with self.subTest("explain agrees with the connections"):
            self.assert_explain_matches_connection(993, PLAIN_V4, "reaches", policy_says=True)
            self.assert_explain_matches_connection(993, PLAIN_V6, "reaches", policy_says=True)
            self.assert_explain_matches_connection(143, ALLOWED_V6, "reaches", policy_says=True)
            self.assert_explain_matches_connection(143, PLAIN_V4, "blocked", policy_says=True)


# ------------------------------------------------------------------------------ an admin's table

ADMIN_TABLE = """\
table inet admin {
  chain input {
    type filter hook input priority 10; policy drop;
    ct state established,related accept
    iif "lo" accept
    meta l4proto ipv6-icmp accept
    tcp dport { 22, 993 } accept
  }
}
"""


class AdminPolicyDrop(PathsCase):
    """The admin's own `policy drop` table that lets 993 through but not 143: the allowlisted
    sources of closed 143 cannot reach it, a conflict with the table as owner."""

    def setUp(self):
        super().setUp()
        self.topo.serve([110, 143, 993])
        self.ns = PrivateNs(self.topo)  # its own PID namespace: no other test's firewalld seen
        self.addCleanup(self.ns.close)
        self.h = self.ns.run
        self.h(["nft", "-f", self.write("admin.nft", ADMIN_TABLE)])

    def test_allowlist_blocked_by_a_policy_drop_then_clean_once_accepted(self):
        self.apply()
        rc, j = self.check()
        with self.subTest("allowlist-blocked conflict with the table as owner and a fix"):
            self.assertEqual(rc, 2, j)
            found = conflicts(j, "allowlist-blocked", 143)
            self.assertEqual({c["family"] for c in found}, {"ipv4", "ipv6"}, j["conflicts"])
            for c in found:
                self.assertIn("admin", c["owner"], c)
                self.assertTrue(c["fix"].strip(), c)
            self.assertEqual(conflicts(j, port=993), [], j["conflicts"])
        with self.subTest("the real connections agree"):
            for src in (ALLOWED_V4, ALLOWED_V6):
                self.assertNotEqual(self.topo.connect(host_of(src), 143, src), "open", src)
                self.assertEqual(self.topo.connect(host_of(src), 993, src), "open", src)
        with self.subTest("explain: blocked by the admin's table"):
            j = self.assert_explain_matches_connection(143, ALLOWED_V4, "blocked", policy_says=False)
            self.assertIn("admin", json.dumps(j["decided_by"]), j)
        self.h(["nft", "add", "rule", "inet", "admin", "input", "tcp", "dport", "143", "accept"])
        with self.subTest("check clean once the admin accepts 143"):
            self.assert_clean()
        with self.subTest("real connections as the policy says"):
            assert_mail_policy_reachability(self, self.topo.reach())
        with self.subTest("explain agrees with the connections"):
            self.assert_explain_matches_connection(143, ALLOWED_V4, "reaches", policy_says=True)
            self.assert_explain_matches_connection(143, PLAIN_V6, "blocked", policy_says=True)


# --------------------------------------------------------------------------------------------- UFW

class UfwStates(PathsCase):
    BACKEND = "ufw"

    def setUp(self):
        super().setUp()
        self.topo.serve([110, 143, 993])

    def use(self, state):
        self.ufw = Ufw(self.topo, self.dir, state)
        self.h = self.ufw.run

    def test_enabled_apply_then_check_clean(self):
        self.use("enabled")
        self.apply()
        with self.subTest("check clean"):
            self.assert_clean()
        with self.subTest("real connections as the policy says"):
            assert_mail_policy_reachability(self, self.topo.reach())

    def test_disabled_is_not_clean_and_says_ufw_enable(self):
        self.use("enabled")
        self.apply()
        self.ufw.run(["ufw", "disable"])
        self.assertEqual(self.topo.connect(HOST_V4, 143, PLAIN_V4), "open")  # nothing enforced
        rc, j = self.check()
        self.assertEqual(rc, 2, j)
        items = j.get("conflicts", []) + j.get("changes", [])
        said = [i for i in items if "disabled" in json.dumps(i).lower() and "ufw enable" in i.get("fix", "")]
        self.assertTrue(said, items)

    def test_pristine_never_enabled_plans_and_applies_files(self):
        self.use("pristine")
        self.assertNotIn("### END RULES ###", self.ufw.file("user.rules"))
        rc, j = self.mw_json(self.h, "plan", policy=self.policy)
        self.assertEqual(rc, 2, j)
        self.assertTrue(j["changes"], j)
        self.apply()
        for name in ("user.rules", "user6.rules"):
            text = self.ufw.file(name)
            self.assertIn("### tuple ### deny tcp 143", text, name)
            self.assertIn("6d61696c77617264", text, name)  # the comment "mailward", as UFW writes it
        self.assertFalse(self.ufw.enabled())
        # The files take effect when the admin enables UFW.
        self.ufw.run(["ufw", "--force", "enable"])
        assert_mail_policy_reachability(self, self.topo.reach())


if __name__ == "__main__":
    unittest.main()
