"""Everyday commands against real firewalls in throwaway namespaces: `remove` (everything
mailward owns goes, atomically, after a snapshot; --dry-run changes nothing), `rollback --dry-run`
(shows the restore, changes nothing), and the messages a new user meets (not root, no policy,
a typo'd command, JSON errors). Every reachability claim is checked with a real connection."""
import hashlib
import json
import os
import subprocess
import unittest

from mwtest import (ALLOWED_V4, HOST_V4, HOST_V6, MAILWARD, PLAIN_V4, PLAIN_V6, MailwardCase, Topology, Ufw,
                    assert_mail_policy_reachability, mail_policy, run)


def ruleset(topo):
    return topo.in_host(["nft", "list", "ruleset"]).stdout


def ipt_save(topo):
    """Both families' rules, without the save's comment lines (they carry the time)."""
    return "".join(line + "\n" for tool in ("iptables-save", "ip6tables-save")
                   for line in topo.in_host([tool]).stdout.splitlines() if not line.startswith("#"))


def ipsets(topo):
    return topo.in_host(["ipset", "list", "-n"]).stdout.split()


class RemoveCase(MailwardCase):
    backend = None

    def setUp(self):
        super().setUp()
        self.topo = Topology()
        self.addCleanup(self.topo.close)
        self.topo.serve([110, 143, 993, 995])
        self.policy = self.write("policy.yaml", mail_policy(self.backend))
        self.host = self.topo.in_host

    def mwh(self, *args):
        return self.mw(self.host, "--backend", self.backend, *args, policy=self.policy)

    def fw_state(self):
        """Everything of the firewall a test can read: nft, iptables, ipsets."""
        return ruleset(self.topo) + ipt_save(self.topo) + "\n".join(ipsets(self.topo))

    def remove_story(self, gone):
        p = self.mwh("apply", "--no-probe")
        self.assertEqual(p.returncode, 0, p.stderr)
        assert_mail_policy_reachability(self, self.topo.reach())
        before = self.fw_state()

        # --dry-run: names what would go, changes nothing (exit 2, like plan with changes).
        p = self.mwh("remove", "--dry-run")
        self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
        self.assertIn("would remove", p.stdout)
        self.assertIn("nothing was changed", p.stdout)
        self.assertEqual(self.fw_state(), before)
        self.assertEqual(self.topo.connect(HOST_V4, 143, PLAIN_V4), "filtered")

        rc, j = self.mw_json(self.host, "--backend", self.backend, "remove", policy=self.policy)
        self.assertEqual(rc, 0, j)
        self.assertEqual(j["command"], "remove")
        self.assertFalse(j["dry_run"])
        done = [b for b in j["backends"] if b["changes"]]
        self.assertEqual([b["backend"] for b in done], [self.backend], j)
        self.assertTrue(os.path.exists(done[0]["snapshot"]), j)
        gone()
        # Nothing of mailward's filters any more: the stranger reaches 143 (the server answers).
        self.assertEqual(self.topo.connect(HOST_V4, 143, PLAIN_V4), "open")
        self.assertEqual(self.topo.connect(HOST_V6, 143, PLAIN_V6), "open")

        # A second remove finds nothing (exit 0), and its dry run says so (exit 0).
        p = self.mwh("remove", "--dry-run")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("nothing to remove", p.stdout)
        after_remove = self.fw_state()

        # rollback --dry-run shows the restore, changes nothing; rollback puts it back.
        p = self.mwh("rollback", "--dry-run")
        self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
        self.assertIn("143", p.stdout)
        self.assertIn("nothing was changed", p.stdout)
        self.assertEqual(self.fw_state(), after_remove)
        self.assertEqual(self.topo.connect(HOST_V4, 143, PLAIN_V4), "open")
        p = self.mwh("rollback")
        self.assertEqual(p.returncode, 0, p.stderr)
        assert_mail_policy_reachability(self, self.topo.reach())
        p = self.mwh("plan")
        self.assertEqual(p.returncode, 0, p.stdout)


class RemoveNftables(RemoveCase):
    backend = "nftables"

    def test_remove_then_rollback(self):
        # A table of someone else's stays as it is.
        self.host(["nft", "add table inet admin; add chain inet admin input { type filter hook input priority 10; }"])
        self.host(["nft", "add rule inet admin input tcp dport 2222 drop"])
        admin = self.host(["nft", "list", "table", "inet", "admin"]).stdout

        def gone():
            self.assertNotIn("table inet mailward", ruleset(self.topo))
            self.assertEqual(self.host(["nft", "list", "table", "inet", "admin"]).stdout, admin)
            # Each rollback point says what made it, who, and from which policy (its SHA-256).
            rc, j = self.mw_json(self.host, "snapshots")
            self.assertEqual(rc, 0, j)
            with open(self.policy, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            self.assertEqual([(s["made_by"], s["policy_sha256"], s["user"]) for s in j["snapshots"]],
                             [("apply", digest, "root"), ("remove", digest, "root")], j)
            out = self.mw(self.host, "snapshots").stdout
            self.assertIn("remove", out)
            self.assertIn(digest[:12], out)

        self.remove_story(gone)

    def test_rollback_dry_run_after_hand_edit(self):
        self.assertEqual(self.mwh("apply", "--no-probe").returncode, 0)
        # An admin changes mailward's allowlist and adds an apply on top.
        second = self.write("second.yaml", mail_policy("nftables").replace("    - 203.0.113.0/24\n", "    - 192.0.2.77\n"))
        self.assertEqual(self.mw(self.host, "--backend", "nftables", "apply", "--no-probe", policy=second).returncode, 0)
        before = ruleset(self.topo)
        rc, j = self.mw_json(self.host, "--backend", "nftables", "rollback", "--dry-run", policy=second)
        self.assertEqual(rc, 2, j)
        self.assertTrue(j["dry_run"])
        ops = {(c["op"], c["object"], tuple(c.get("items", []))) for c in j["changes"]}
        self.assertIn(("delete", "elements", ("192.0.2.77",)), ops, j)
        self.assertIn(("add", "elements", ("203.0.113.0/24",)), ops, j)
        self.assertEqual(ruleset(self.topo), before)
        # --to the first snapshot: the state before mailward's first apply: the table goes.
        rc, j = self.mw_json(self.host, "--backend", "nftables", "rollback", "--dry-run", "--to", "1", policy=second)
        self.assertEqual(rc, 2, j)
        self.assertEqual([(c["op"], c["object"]) for c in j["changes"]], [("delete", "table")], j)
        self.assertEqual(j["snapshots_dropped"], 1)
        self.assertEqual(ruleset(self.topo), before)


class HandEditsReadable(RemoveCase):
    backend = "nftables"

    def test_plan_shows_hand_edits_in_nft_syntax(self):
        self.assertEqual(self.mwh("apply", "--no-probe").returncode, 0)
        listing = self.host(["nft", "-a", "list", "chain", "inet", "mailward", "prerouting"]).stdout
        handle = next(l.rsplit("handle ", 1)[1] for l in listing.splitlines() if "mailward:993:open" in l)
        edits = [
            f"replace rule inet mailward prerouting handle {handle} tcp dport 993 ip saddr 10.0.0.0/8 meta mark 0x5 "
            'ct state established,related counter accept comment "mailward:993:open"',
            "insert rule inet mailward prerouting ip6 nexthdr tcp tcp flags syn / syn,ack tcp option maxseg size 1-500 drop",
            'add rule inet mailward prerouting meta l4proto udp th dport 53 numgen random mod 2 0 log prefix "x" drop',
            "add rule inet mailward prerouting tcp option sack-perm exists meta mark set 0x7 tcp dport 2525 accept",
        ]
        for e in edits:
            self.host(["nft", e])
        p = self.mwh("plan")
        self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
        rc, j = self.mw_json(self.host, "--backend", "nftables", "plan", policy=self.policy)
        details = [c["detail"] for c in j["changes"] if c["object"] == "rule"]
        for text in [p.stdout] + details:
            self.assertNotIn("reg ", text)   # libnftnl's register notation
            self.assertNotIn("=>", text)
        for want in ("tcp dport 993 ip saddr 10.0.0.0/8 meta mark 0x00000005 ct state established,related counter accept",
                     "ip6 nexthdr tcp tcp flags & (syn|ack) == syn tcp option maxseg size 1-500 drop",
                     'udp dport 53 numgen random mod 2 0 log prefix "x" drop',
                     "tcp option sack-perm exists meta mark set 0x00000007 tcp dport 2525 accept"):
            self.assertIn(want, details)
        # apply repairs all of it; the stranger is still kept off 143.
        self.assertEqual(self.mwh("apply", "--no-probe").returncode, 0)
        self.assertEqual(self.mwh("plan").returncode, 0)
        assert_mail_policy_reachability(self, self.topo.reach())


class RemoveIptables(RemoveCase):
    backend = "iptables"

    def test_remove_then_rollback(self):
        self.host(["iptables", "-A", "INPUT", "-p", "tcp", "--dport", "2222", "-j", "DROP"])

        def gone():
            save = ipt_save(self.topo)
            self.assertNotIn("MAILWARD", save)
            self.assertIn("--dport 2222 -j DROP", save)  # the admin's rule stays
            self.assertEqual([s for s in ipsets(self.topo) if s.startswith("mw_")], [])

        self.remove_story(gone)


class RemoveUfw(MailwardCase):
    def test_remove_keeps_the_admins_rules(self):
        topo = Topology()
        self.addCleanup(topo.close)
        topo.serve([143, 993])
        ufw = Ufw(topo, self.dir)
        ufw.run(["ufw", "allow", "2222/tcp"])
        policy = self.write("policy.yaml", mail_policy("ufw"))
        self.assertEqual(self.mw(ufw.run, "apply", "--no-probe", policy=policy).returncode, 0)
        ours = "comment=6d61696c77617264"  # "mailward", as UFW stores comments
        self.assertIn(ours, ufw.file("user.rules"))
        self.assertEqual(topo.connect(HOST_V4, 993, PLAIN_V4), "open")
        self.assertEqual(topo.connect(HOST_V4, 143, ALLOWED_V4), "open")
        files = ufw.file("user.rules") + ufw.file("user6.rules")
        p = self.mw(ufw.run, "remove", "--dry-run", policy=policy)
        self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
        self.assertEqual(ufw.file("user.rules") + ufw.file("user6.rules"), files)
        rc, j = self.mw_json(ufw.run, "remove", policy=policy)
        self.assertEqual(rc, 0, j)
        self.assertEqual([b["backend"] for b in j["backends"] if b["changes"]], ["ufw"], j)
        rules = ufw.file("user.rules") + ufw.file("user6.rules")
        self.assertNotIn(ours, rules)
        self.assertIn("2222", rules)  # the admin's rule stays
        self.assertNotIn("MAILWARD", ufw.run(["iptables-save"]).stdout)
        # UFW's own default (deny incoming) now decides: 993 is no longer opened by mailward.
        self.assertEqual(topo.connect(HOST_V4, 993, PLAIN_V4), "filtered")
        # rollback --dry-run lists the rules it would put back, changing nothing.
        p = self.mw(ufw.run, "rollback", "--dry-run", policy=policy)
        self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
        self.assertIn("993", p.stdout)
        self.assertEqual(ufw.file("user.rules") + ufw.file("user6.rules"), rules)
        self.assertEqual(self.mw(ufw.run, "rollback", policy=policy).returncode, 0)
        self.assertEqual(topo.connect(HOST_V4, 993, PLAIN_V4), "open")


class Messages(MailwardCase):
    def as_nobody(self, *args):
        return run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", MAILWARD] + list(args),
                   check=False)

    def test_not_root_names_root_and_cap_net_admin(self):
        os.chmod(self.dir, 0o755)
        policy = self.write("p.yaml", mail_policy("auto"))
        os.chmod(policy, 0o644)
        for cmd in (["plan"], ["status"], ["check", "--no-probe"], ["apply"], ["remove", "--dry-run"],
                    ["explain", "143", "--from", "192.0.2.1"]):
            p = self.as_nobody("--policy", policy, "--state-dir", os.path.join(self.dir, "st"), *cmd)
            self.assertEqual(p.returncode, 1, (cmd, p.stdout, p.stderr))
            self.assertIn("root", p.stderr, cmd)
            self.assertIn("CAP_NET_ADMIN", p.stderr, cmd)
            self.assertNotIn("nothing was applied", p.stderr, cmd)
        p = self.as_nobody("--format", "json", "--policy", policy, "plan")
        self.assertEqual(json.loads(p.stdout)["error"]["kind"], "permission")

    def test_no_policy_says_where_to_start(self):
        p = run([MAILWARD, "--policy", os.path.join(self.dir, "none.yaml"), "validate"], check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("mailward init", p.stderr)
        self.assertIn("/usr/share/mailward/policies/", p.stderr)

    def test_plan_on_a_bad_policy_does_not_talk_of_applying(self):
        bad = self.write("bad.yaml", "version: 1\nports:\n  imap: {state: shut}\n")
        p = run([MAILWARD, "--policy", bad, "plan"], check=False)
        self.assertEqual(p.returncode, 1)
        self.assertNotIn("nothing was applied", p.stderr)
        p = run([MAILWARD, "--policy", bad, "--state-dir", os.path.join(self.dir, "st"), "apply"], check=False)
        self.assertIn("nothing was applied", p.stderr)

    def test_typo_suggests_the_command_and_json_errors(self):
        p = run([MAILWARD, "plna"], check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("did you mean 'plan'", p.stderr)
        p = run([MAILWARD, "--format", "json", "--policy", "x.yaml", "statsu"], check=False)
        self.assertEqual(p.returncode, 1)
        j = json.loads(p.stdout)
        self.assertEqual(j["error"]["kind"], "usage")
        self.assertIn("did you mean 'status'", j["error"]["message"])
        p = run([MAILWARD, "--format=json", "plan", "--bogus"], check=False)
        j = json.loads(p.stdout)
        self.assertEqual(j["command"], "plan")
        self.assertIn("--bogus", j["error"]["message"])
        p = run([MAILWARD], check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("no command given", p.stderr)

    def test_help_has_no_cli11_defaults_noise(self):
        for cmd in ("check", "apply"):
            out = run([MAILWARD, cmd, "--help"]).stdout
            self.assertIn("--no-probe", out)
            self.assertNotIn("{false}", out)
        self.assertIn("remove", run([MAILWARD, "--help"]).stdout)

    def test_counts_are_plural_only_when_many(self):
        one = self.write("one.yaml", "version: 1\nallowlists:\n  office: [192.0.2.0/24]\nports:\n"
                                     "  imap: {state: closed, allow: [office]}\n")
        out = run([MAILWARD, "--policy", one, "validate"]).stdout
        self.assertIn("1 port, 1 allowlist", out)


class Demo(unittest.TestCase):
    def test_the_demo_tells_its_story_and_ends_well(self):
        script = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "demo.sh")
        p = subprocess.run([script], capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, MAILWARD_DEMO_BIN=os.path.abspath(MAILWARD)))
        self.assertEqual(p.returncode, 0, p.stdout[-3000:] + p.stderr[-3000:])
        out = p.stdout
        self.assertIn("198.51.100.2 -> :143  filtered", out)   # the stranger, after apply
        self.assertIn("198.51.100.3 -> :143  open", out)       # the office
        self.assertIn("auth_verbose_passwords = plain", out)   # the audit finding...
        self.assertIn("99-mailward-hardening.conf", out)       # ...and its fix
        self.assertIn("drift found", out)
        self.assertTrue(out.rstrip().endswith("removes now\x1b[0m") or "removes now" in out.splitlines()[-1], out[-500:])


if __name__ == "__main__":
    unittest.main()
