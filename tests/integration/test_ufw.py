"""The UFW backend against real UFW, on private copies of /etc/ufw and /etc/default/ufw in a
mount namespace (TESTING.md) and a network namespace: never the machine's own UFW. Reachability
from a client namespace, the admin's UFW rules untouched, an admin's allow recognised, UFW's own
reloads keep mailward's rules, drift (a deleted rule, a flushed chain) repaired, a failed reload
put back, rollback, and backend: auto / two-manager detection. The DNAT path with a real dockerd
(mailward's mangle and nat chains beside UFW), UFW disabled (not clean, fix `ufw enable`) and a
never-enabled UFW (the package's files, planned and applied, effective on enable)."""
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest

from pidns import PrivatePids
from mwtest import (fault_env, ALLOWED_V4, ALLOWED_V6, HOST_V4, HOST_V6, MAILWARD, PLAIN_V4, PLAIN_V6, Dockerd, docker_rules,
                    have_docker, assert_mail_policy_reachability, mail_policy, MailwardCase, run, Sandbox, Topology)

def policy_text(backend="ufw"):
    return mail_policy(backend)


class UfwHost:
    """A Topology host namespace whose commands see private copies of UFW's files."""

    def __init__(self, tmpdir):
        self.topo = Topology()
        self.etc = os.path.join(tmpdir, "etc-ufw")
        self.default = os.path.join(tmpdir, "default-ufw")
        shutil.copytree("/etc/ufw", self.etc, symlinks=True)
        shutil.copy2("/etc/default/ufw", self.default)
        self.pids = PrivatePids()

    def run(self, argv, **kw):
        script = 'mount --bind "$1" /etc/ufw && mount --bind "$2" /etc/default/ufw && shift 2 && exec "$@"'
        # A PID namespace of its own (pidns.py): a firewalld that other suites run on this
        # machine, in their own namespaces, is not this host's manager.
        return run(self.pids.prefix() + ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", self.etc, self.default,
                    "ip", "netns", "exec", self.topo.host] + list(argv), **kw)

    def files(self):
        out = []
        for name in ("user.rules", "user6.rules"):
            with open(os.path.join(self.etc, name)) as f:
                out.append(f.read())
        return out

    def tuples(self):
        return [l for text in self.files() for l in text.splitlines() if l.startswith("### tuple ###")]

    def close(self):
        self.pids.close()
        self.topo.close()


class UfwCase(MailwardCase):
    def setUp(self):
        super().setUp()
        self.h = UfwHost(self.dir)
        self.addCleanup(self.h.close)
        self.policy = self.write("policy.yaml", policy_text())
        self.h.run(["ufw", "--force", "enable"])
        self.h.run(["ufw", "allow", "22/tcp"])
        self.h.run(["ufw", "allow", "993/tcp"])


class HandEditedTuple(UfwCase):
    def test_a_second_comment_in_a_tuple_never_crashes_plan_check_or_apply(self):
        self.mw(self.h.run, "apply", "--no-probe", policy=self.policy, check=True)
        path = os.path.join(self.h.etc, "user.rules")
        with open(path) as f:
            text = f.read()
        ours = " in comment=6d61696c77617264\n"
        self.assertIn(ours, text)
        with open(path, "w") as f:
            f.write(text.replace(ours, " in comment=zz comment=6d61696c77617264\n", 1))
        for argv in (["plan"], ["check", "--no-probe"], ["apply", "--no-probe"]):
            p = self.mw(self.h.run, "--format", "json", *argv, policy=self.policy)
            self.assertIn(p.returncode, (0, 1, 2), (argv, p.stderr))
            j = json.loads(p.stdout)
            if p.returncode == 1:
                self.assertTrue(j["error"]["message"], j)
            else:
                self.assertIn("changes", j)


class Reachability(UfwCase):
    def test_reachability_admin_rules_and_ufw_reloads(self):
        self.h.topo.serve([110, 143, 993])
        admin = [t for t in self.h.tuples()]
        rc, j = self.mw_json(self.h.run, "apply", policy=self.policy)
        self.assertEqual(rc, 0, j)
        self.assertEqual(j["backend"], "ufw")
        self.assertTrue(any("993/tcp is already allowed" in n for n in j["notes"]), j["notes"])
        after = self.h.topo.reach()
        assert_mail_policy_reachability(self, after)
        tuples = self.h.tuples()
        # The admin's rules are all still there, in order, after mailward's.
        self.assertEqual([t for t in tuples if "comment=6d61696c77617264" not in t], admin)
        # 993 was already allowed by the admin: not duplicated.
        self.assertEqual(len([t for t in tuples if " 993 " in t]), 2)
        self.assertTrue(any(t.startswith("### tuple ### limit tcp 995") for t in tuples))
        status = self.h.run(["ufw", "status"]).stdout
        self.assertRegex(status, r"143/tcp +ALLOW +203\.0\.113\.0/24 +# mailward")
        self.assertRegex(status, r"22/tcp +ALLOW +Anywhere")
        # In sync the second time; UFW's own reload and an admin's later rule keep it so.
        rc, j = self.mw_json(self.h.run, "apply", policy=self.policy)
        self.assertEqual((rc, j["applied"], j["changes"]), (0, False, []))
        self.h.run(["ufw", "reload"])
        self.h.run(["ufw", "allow", "80/tcp"])
        rc, j = self.mw_json(self.h.run, "plan", policy=self.policy)
        self.assertEqual((rc, j["in_sync"]), (0, True), j)
        self.assertEqual(self.h.topo.connect(HOST_V4, 143, PLAIN_V4), "filtered")
        self.assertEqual(self.h.topo.connect(HOST_V4, 143, ALLOWED_V4), "open")

    def test_drift_deleted_rule_and_flushed_chain(self):
        self.h.topo.serve([143])
        self.mw(self.h.run, "apply", policy=self.policy, check=True)
        good = self.h.files()
        numbered = self.h.run(["ufw", "status", "numbered"]).stdout
        num = re.search(r"\[ *(\d+)\] 143/tcp +DENY IN +Anywhere +# mailward", numbered).group(1)
        self.h.run(["ufw", "--force", "delete", num])
        rc, j = self.mw_json(self.h.run, "check", "--no-probe", policy=self.policy)
        self.assertEqual(rc, 2)
        self.assertEqual([(c["op"], c["detail"]) for c in j["changes"]], [("add", "deny 143/tcp  # mailward")])
        self.mw(self.h.run, "apply", policy=self.policy, check=True)
        self.assertEqual(self.h.files(), good)
        # Someone edits mailward's rule in UFW's file by hand (the tuple stays, the rule changes).
        path = os.path.join(self.h.etc, "user.rules")
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text.replace("--dport 143 -j DROP", "--dport 143 -j ACCEPT"))
        rc, j = self.mw_json(self.h.run, "check", "--no-probe", policy=self.policy)
        self.assertEqual(rc, 2)
        self.assertTrue(any("edited by hand" in c["detail"] for c in j["changes"]), j["changes"])
        self.mw(self.h.run, "apply", policy=self.policy, check=True)
        self.assertEqual(self.h.files(), good)
        # Someone flushes the loaded chain: the files are right, the kernel is not.
        self.h.run(["iptables", "-F", "ufw-user-input"])
        self.assertEqual(self.h.topo.connect(HOST_V4, 143, ALLOWED_V4), "filtered")
        rc, j = self.mw_json(self.h.run, "check", "--no-probe", policy=self.policy)
        self.assertEqual(rc, 2)
        self.assertIn("reload", j["changes"][0]["detail"])
        self.mw(self.h.run, "apply", policy=self.policy, check=True)
        self.assertEqual(self.h.topo.connect(HOST_V4, 143, ALLOWED_V4), "open")
        self.assertEqual(self.mw(self.h.run, "check", "--no-probe", policy=self.policy).returncode, 0)


class Safety(UfwCase):
    def test_failed_reload_and_rollback_put_the_files_back(self):
        before = self.h.files()
        env = fault_env("ufw-reload")
        p = self.mw(lambda a, **kw: self.h.run(a, env=env, **kw), "apply", policy=self.policy)
        self.assertEqual(p.returncode, 1)
        self.assertIn("put back", p.stderr)
        self.assertEqual(self.h.files(), before)
        self.mw(self.h.run, "apply", policy=self.policy, check=True)
        self.assertNotEqual(self.h.files(), before)
        self.mw(self.h.run, "rollback", check=True)
        self.assertEqual(self.h.files(), before)

    def test_unconfirmed_apply_reverts(self):
        before = self.h.files()
        rc, j = self.mw_json(self.h.run, "apply", "--confirm", "2", policy=self.policy)
        self.assertEqual((rc, j["confirm"]["pending"]), (0, True), j)
        self.assertNotEqual(self.h.files(), before)
        deadline = time.time() + 30
        while time.time() < deadline and self.h.files() != before:
            time.sleep(0.2)
        self.assertEqual(self.h.files(), before, "not reverted")
        log = os.path.join(self.state, "confirm.log")
        while time.time() < deadline:  # the reload after the files: done when the log says so
            if os.path.exists(log) and "not confirmed in time: reverted" in open(log).read():
                break
            time.sleep(0.2)
        # Reverted in UFW's loaded rules too, not only in its files.
        rc, j = self.mw_json(self.h.run, "plan", policy=self.policy)
        self.assertFalse(any("loaded" in c["name"] for c in j["changes"]), j["changes"])

    def test_bad_policy_changes_nothing(self):
        before = self.h.files()
        bad = self.write("bad.yaml", policy_text().replace("state: open", "state: opne", 1))
        p = self.mw(self.h.run, "apply", policy=bad)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(self.h.files(), before)

    def test_auto_and_two_managers(self):
        auto = self.write("auto.yaml", policy_text("auto"))
        rc, j = self.mw_json(self.h.run, "plan", policy=auto)
        self.assertEqual((j["backend"], j["manager_conflicts"]), ("ufw", []))
        self.assertIn("UFW is active", j["backend_reason"])
        # Told iptables while UFW is active: reported, and apply refuses.
        ipt = self.write("ipt.yaml", policy_text("iptables"))
        rc, j = self.mw_json(self.h.run, "plan", policy=ipt)
        self.assertEqual(j["backend"], "iptables")
        self.assertTrue(j["manager_conflicts"] and "UFW is active" in j["manager_conflicts"][0])
        saved = self.h.run(["iptables-save", "-t", "filter"]).stdout
        p = self.mw(self.h.run, "apply", policy=ipt)
        self.assertEqual(p.returncode, 1)
        self.assertIn("two firewall managers", p.stderr)
        strip = lambda s: [l for l in s.splitlines() if not l.startswith("#")]
        self.assertEqual(strip(self.h.run(["iptables-save", "-t", "filter"]).stdout), strip(saved))
        rc, j = self.mw_json(self.h.run, "check", "--no-probe", policy=ipt)
        self.assertEqual(rc, 2)
        # UFW disabled: auto falls to nftables.
        self.h.run(["ufw", "disable"])
        rc, j = self.mw_json(self.h.run, "plan", policy=auto)
        self.assertEqual(j["backend"], "nftables")


@unittest.skipUnless(have_docker(), "docker.io and busybox-static are needed")
class DnatPath(UfwCase):
    """Docker publishes 143, 110 and 993 of a container past UFW (DNAT, then FORWARD): with
    backend ufw the policy holds for it too, and UFW's reloads keep it so."""

    def docker_tables(self):
        out = {}
        for tool in ("iptables-save", "ip6tables-save"):
            for t in ("nat", "filter"):
                text = self.h.run([tool, "-t", t]).stdout
                # UFW's chains (mailward's UFW rules among them) are UFW's business, not Docker's.
                out[(tool, t)] = "\n".join(l for l in docker_rules(text).splitlines() if "ufw" not in l)
        return out

    def greeting(self, port, source, wait=0):
        dest = HOST_V6 if ":" in source else HOST_V4
        code = ("import socket;s=socket.socket(%s);s.settimeout(2);s.bind((%r,0));s.connect((%r,%d));print(s.recv(64))"
                % ("socket.AF_INET6" if ":" in source else "socket.AF_INET", source, dest, port))
        deadline = time.time() + wait
        while True:
            out = run(["ip", "netns", "exec", self.h.topo.client, "python3", "-c", code], check=False).stdout
            if "OK" in out or time.time() >= deadline:
                return out
            time.sleep(0.2)

    def test_closed_ports_hold_for_published_containers(self):
        docker = Dockerd(self.h.topo, self.dir, ipv6_cidr="2001:db8:1::/64")
        self.addCleanup(docker.close)
        cid, _ = docker.serve([143, 110, 993])
        for src in (PLAIN_V4, PLAIN_V6):                                  # Docker's DNAT bypasses UFW
            self.assertIn("container", self.greeting(143, src, wait=30))
        before = self.docker_tables()
        rc, j = self.mw_json(self.h.run, "apply", policy=self.policy)
        self.assertEqual(rc, 0, j)
        names = [c["name"] for c in j["changes"]]
        for n in ("iptables mangle mailward:143:closed", "iptables nat mailward:110:closed",
                  "ip6tables mangle mailward:143:closed", "ip6tables nat mailward:110:closed"):
            self.assertIn(n, names)
        for plain, allowed, host in ((PLAIN_V4, ALLOWED_V4, HOST_V4), (PLAIN_V6, ALLOWED_V6, HOST_V6)):
            self.assertEqual(self.h.topo.connect(host, 143, plain), "filtered")
            self.assertIn("container", self.greeting(143, allowed))
            self.assertEqual(self.h.topo.connect(host, 110, plain), "closed")   # UFW's reject, in INPUT
            self.assertIn("container", self.greeting(993, plain))
        self.assertEqual(self.docker_tables(), before)
        mangle = self.h.run(["iptables-save", "-t", "mangle"]).stdout
        self.assertIn("-A MAILWARD -s 203.0.113.0/24 -p tcp -m tcp --dport 143", mangle)  # no ipsets with UFW
        self.assertEqual(self.h.run(["ipset", "list", "-n"], check=False).stdout.strip(), "")
        # UFW's own reload keeps mailward's chains; a container published later is covered.
        self.h.run(["ufw", "reload"])
        docker.remove(cid)
        docker.serve([143], greeting="later")
        self.assertIn("later", self.greeting(143, ALLOWED_V4, wait=30))
        self.assertIn("later", self.greeting(143, ALLOWED_V6, wait=30))
        self.assertEqual(self.h.topo.connect(HOST_V4, 143, PLAIN_V4), "filtered")
        self.assertEqual(self.h.topo.connect(HOST_V6, 143, PLAIN_V6), "filtered")
        rc, j = self.mw_json(self.h.run, "plan", policy=self.policy)
        self.assertEqual((rc, j["in_sync"]), (0, True), j)
        # A failing ip6tables-restore puts UFW's files and the IPv4 chains back.
        self.mw(self.h.run, "rollback", check=True)
        self.assertNotIn("MAILWARD", self.h.run(["iptables-save"]).stdout)
        self.assertNotIn("MAILWARD", self.h.run(["ip6tables-save"]).stdout)
        files = self.h.files()
        env = fault_env("ip6tables-restore")
        p = self.mw(lambda a, **kw: self.h.run(a, env=env, **kw), "apply", policy=self.policy)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("put back", p.stderr)
        self.assertEqual(self.h.files(), files)
        self.assertNotIn("MAILWARD", self.h.run(["iptables-save"]).stdout)
        self.assertIn("later", self.greeting(143, PLAIN_V4))


class NotEnabled(MailwardCase):
    """UFW switched off, or never enabled: the package's pristine rules files."""

    def setUp(self):
        super().setUp()
        self.h = UfwHost(self.dir)
        self.addCleanup(self.h.close)
        # The package's files, whatever this machine's copy holds.
        for name in ("user.rules", "user6.rules"):
            shutil.copy(os.path.join("/usr/share/ufw", name), os.path.join(self.h.etc, name))
        with open(os.path.join(self.h.etc, "ufw.conf")) as f:
            conf = f.read()
        with open(os.path.join(self.h.etc, "ufw.conf"), "w") as f:
            f.write(re.sub(r"(?m)^ENABLED=.*$", "ENABLED=no", conf))
        self.policy = self.write("policy.yaml", policy_text())

    def assert_disabled_conflicts(self, j, ports=(110, 143)):
        """UFW off: every closed port that really is reachable is a conflict owned by UFW. Once
        mailward's DNAT-path chain (mangle) is in place it still drops 143 with UFW off, so only
        110 (rejected by UFW's own rules) stays reachable."""
        closed = {(c["port"], c["family"]) for c in j["conflicts"] if c.get("fix") == "ufw enable"}
        self.assertEqual(closed, {(p, f) for p in ports for f in ("ipv4", "ipv6")}, j["conflicts"])
        self.assertTrue(all(c["where"] == "ufw" and "not enforced" in c["reason"] and c["owner"] == "UFW"
                            and c["kind"] == "closed-port-reachable" and c["certainty"] == "reaches"
                            for c in j["conflicts"]), j["conflicts"])

    def test_never_enabled_plans_applies_and_takes_effect_on_enable(self):
        self.assertNotIn("### END RULES ###", self.h.files()[0])
        rc, j = self.mw_json(self.h.run, "plan", policy=self.policy)
        self.assertEqual(rc, 2, j)
        self.assertTrue(any("still the package's" in n for n in j["notes"]), j["notes"])
        self.assertTrue(any("take effect when UFW is enabled" in n for n in j["notes"]), j["notes"])
        self.assert_disabled_conflicts(j)
        rc, j = self.mw_json(self.h.run, "apply", policy=self.policy)
        self.assertEqual(rc, 0, j)
        self.assertTrue(all("### END RULES ###" in t for t in self.h.files()))
        # check is not clean while UFW is off: the policy is not enforced.
        rc, j = self.mw_json(self.h.run, "check", "--no-probe", policy=self.policy)
        self.assertEqual(rc, 2, j)
        self.assertEqual(j["changes"], [])
        self.assert_disabled_conflicts(j, ports=(110,))
        # Enabled, UFW loads the files as mailward wrote them: the policy holds, check is clean.
        self.h.topo.serve([110, 143, 993, 995])
        self.h.run(["ufw", "--force", "enable"])
        assert_mail_policy_reachability(self, self.h.topo.reach())
        self.assertRegex(self.h.run(["ufw", "status"]).stdout, r"995/tcp \(v6\) +LIMIT +Anywhere \(v6\) +# mailward")
        rc, j = self.mw_json(self.h.run, "check", "--no-probe", policy=self.policy)
        self.assertEqual((rc, j["changes"], j["conflicts"]), (0, [], []), j)

    def test_disabled_is_not_clean_until_enabled(self):
        self.h.run(["ufw", "--force", "enable"])
        self.mw(self.h.run, "apply", policy=self.policy, check=True)
        self.assertEqual(self.mw(self.h.run, "check", "--no-probe", policy=self.policy).returncode, 0)
        self.h.run(["ufw", "disable"])
        rc, j = self.mw_json(self.h.run, "check", "--no-probe", policy=self.policy)
        self.assertEqual(rc, 2, j)
        self.assert_disabled_conflicts(j, ports=(110,))
        text = self.mw(self.h.run, "check", "--no-probe", policy=self.policy).stdout
        self.assertIn("fix: ufw enable", text)
        self.h.run(["ufw", "--force", "enable"])
        self.assertEqual(self.mw(self.h.run, "check", "--no-probe", policy=self.policy).returncode, 0)


class Firewalld(MailwardCase):
    def test_auto_with_firewalld_running_keeps_to_nftables(self):
        # A process named firewalld in a PID namespace of its own (never seen by other tests).
        ns = Sandbox()
        self.addCleanup(ns.close)
        fake = os.path.join(self.dir, "firewalld")
        shutil.copy("/bin/sleep", fake)
        auto = self.write("auto.yaml", policy_text("auto"))
        script = f'"{fake}" 30 & sleep 0.2; "{MAILWARD}" --state-dir "{self.state}" --policy "{auto}" --format json plan'
        p = ns.run(["unshare", "-p", "-f", "--mount-proc", "sh", "-c", script], check=False)
        j = json.loads(p.stdout)
        self.assertEqual(j["backend"], "nftables")
        self.assertIn("firewalld", j["backend_reason"])
        p = ns.run([MAILWARD, "--state-dir", self.state, "--policy", auto, "--format", "json", "plan"], check=False)
        j = json.loads(p.stdout)
        self.assertEqual(j["backend"], "nftables")
        self.assertEqual(j["backend_reason"], "auto: nftables is available")


if __name__ == "__main__":
    unittest.main()
