"""The Dovecot audit against the real thing: its parser cross-checked with `doveconf -h` on
Debian's own /etc/dovecot tree and on a dozen varied configs; permissions on real files; --fix on
a private copy of the tree, checked by doveconf; a policy's dovecot block inside `check`."""
import json
import os
import shutil
import stat
import subprocess
import time
import unittest

from mwtest import Sandbox, MAILWARD, MailwardCase, run

CONFIGS = {
    "plain": "protocols = imap pop3\nauth_mechanisms = plain login\n",
    "debug": "auth_debug = yes\nauth_debug_passwords = yes\nmail_debug = yes\n",
    "overridden": "auth_debug = yes\nauth_debug = no\nauth_verbose_passwords = plain\nauth_verbose_passwords = sha1\n",
    "quoted": 'auth_mechanisms = "plain login"\nlogin_trusted_networks = \'10.0.0.0/8\'\n',
    "comments": "# auth_debug = yes\nauth_mechanisms = plain # login\n  #mail_debug = yes\n",
    "continued": "login_trusted_networks = 192.0.2.0/24 \\\n   198.51.100.0/24\n",
    "expanded": "protocols = $protocols imap\nprotocols = $protocols pop3\n",
    "sections": ("protocol imap {\n  mail_debug = yes\n}\nremote 127.0.0.1 {\n  disable_plaintext_auth = no\n}\n"
                 "service imap-login {\n  inet_listener imap {\n    port = 0\n  }\n}\n"),
    "cleartext": "protocols = imap pop3\ndisable_plaintext_auth = no\nssl = no\n",
    "required": "disable_plaintext_auth = no\nssl = required\nssl_min_protocol = TLSv1.1\n",
    "anonymous": "auth_mechanisms = plain anonymous\nauth_anonymous_username = guest\n",
    "includes": "!include conf.d/*.conf\n!include_try missing.conf\nauth_debug = no\n",
}
CONFD = {"10-a.conf": "auth_debug = yes\nauth_mechanisms = plain\n", "20-b.conf": "auth_mechanisms = $auth_mechanisms login\n"}


def doveconf(config, setting):
    return run(["doveconf", "-c", config, "-h", setting]).stdout.rstrip("\n")


def read(path):
    with open(path, "rb") as f:
        return f.read()


def audit(config, *extra):
    p = run([MAILWARD, "--policy", "/nonexistent", "--format", "json", "audit", "dovecot", "--config", config, *extra],
            check=False)
    return p.returncode, json.loads(p.stdout), p.stderr


class CrossCheck(MailwardCase):
    def compare(self, config):
        rc, j, err = audit(config)
        self.assertIn(rc, (0, 2), err)
        self.assertGreaterEqual(len(j["settings"]), 10)
        for setting, eff in j["settings"].items():
            with self.subTest(config=os.path.basename(config), setting=setting):
                self.assertEqual(eff["value"], doveconf(config, setting))
        return j

    def test_debians_own_tree(self):
        j = self.compare("/etc/dovecot/dovecot.conf")
        self.assertGreater(len(j["files"]), 5)
        self.assertEqual(j["findings"], [], "Debian's defaults are sane: no false alarms")

    def test_varied_configs(self):
        os.makedirs(os.path.join(self.dir, "conf.d"))
        for name, text in CONFD.items():
            self.write(os.path.join("conf.d", name), text)
        for name, text in CONFIGS.items():
            self.compare(self.write(name + ".conf", text))


class Findings(MailwardCase):
    def ids(self, text):
        rc, j, err = audit(self.write("d.conf", text))
        return rc, sorted(f["id"] for f in j["findings"]), j

    def test_findings_and_exit_codes(self):
        rc, ids, j = self.ids(CONFIGS["debug"])
        self.assertEqual((rc, ids), (2, ["auth-debug", "auth-debug-passwords", "mail-debug"]))
        f = [x for x in j["findings"] if x["id"] == "auth-debug-passwords"][0]
        self.assertEqual((f["severity"], f["setting"], f["value"], f["line"]), ("critical", "auth_debug_passwords", "yes", 2))
        self.assertTrue(f["file"].endswith("d.conf"))
        self.assertTrue(f["message"] and f["fix"])
        self.assertEqual(self.ids(CONFIGS["plain"])[:2], (0, []))
        self.assertEqual(self.ids(CONFIGS["comments"])[:2], (0, []))
        self.assertEqual(self.ids(CONFIGS["overridden"])[1], ["auth-verbose-passwords"])
        self.assertEqual(self.ids(CONFIGS["required"])[1], ["weak-tls-protocol"])
        self.assertEqual(self.ids(CONFIGS["cleartext"])[1],
                         ["cleartext-auth", "plaintext-listener", "plaintext-listener", "ssl-disabled"])

    def test_permissions_on_real_files(self):
        key = self.write("key.pem", "-----BEGIN PRIVATE KEY-----\n")
        conf = self.write("p.conf", f"ssl_key = <{key}\n")
        os.chmod(key, 0o600)
        os.chmod(conf, 0o644)
        self.assertEqual(audit(conf)[0], 0)
        os.chmod(key, 0o644)
        os.chmod(conf, 0o666)
        rc, j, _ = audit(conf)
        self.assertEqual(rc, 2)
        got = {(f["id"], f["setting"], f["file"]) for f in j["findings"]}
        self.assertEqual(got, {("ssl-key-exposed", None, key), ("config-writable", None, conf)})

    def test_bad_configs_fail_fast_with_file_and_line(self):
        cases = {
            "cycle": ("!include cycle.conf\n", "Recursive include file"),
            "missing": ("!include nothere.conf\n", "nothere.conf: cannot open"),
            "junk": ("auth_debug = yes\n\x00\x01\x02ELF", "binary data"),
            "deep": ("plugin {\n" * 20000 + "}\n" * 20000, None),
        }
        for name, (text, msg) in cases.items():
            with self.subTest(case=name):
                path = self.write(name == "cycle" and "cycle.conf" or name + ".conf", text)
                t = time.monotonic()
                rc, j, err = audit(path, "--engine", "builtin")
                self.assertLess(time.monotonic() - t, 20)
                if msg is None:
                    self.assertEqual(rc, 0, err)
                    # doveconf refuses plugin { plugin { } }: with it as the engine, so does the audit.
                    rc, j, err = audit(path, "--engine", "doveconf")
                    self.assertEqual(rc, 1)
                    self.assertIn("Section not allowed here", err)
                else:
                    self.assertEqual(rc, 1)
                    self.assertIn(msg, j["error"]["message"])
                    self.assertIn(msg, err)


    def test_unclosed_section_is_accepted_with_a_warning_like_doveconf(self):
        path = self.write("open.conf", "protocols = imap\nprotocol imap {\n  mail_debug = yes\n")
        self.assertEqual(run(["doveconf", "-c", path, "-f", "protocol=imap", "-h", "mail_debug"]).stdout, "yes\n")
        for engine in ("builtin", "doveconf"):
            rc, j, err = audit(path, "--engine", engine)
            self.assertEqual((rc, j["engine"]), (2, engine), err)
            self.assertEqual([(f["id"], f["contexts"]) for f in j["findings"]], [("mail-debug", ["protocol=imap"])])
            self.assertIn(":2: section 'protocol imap' is never closed", j["warnings"][0])


class Engines(MailwardCase):
    def test_doveconf_values_and_the_parsers_file_and_line(self):
        """--engine doveconf takes doveconf's values; the builtin parser names file:line; auto picks
        doveconf where it is installed; the JSON says which one judged."""
        conf = self.write("e.conf", "protocols = imap pop3\nssl = required\ndisable_plaintext_auth = no\n"
                                    "protocol pop3 {\n  ssl = yes\n}\n")
        got = {}
        for engine in ("auto", "doveconf", "builtin"):
            rc, j, err = audit(conf, "--engine", engine)
            self.assertEqual(rc, 2, err)
            got[engine] = j
        self.assertEqual(got["auto"]["engine"], "doveconf")
        self.assertEqual(got["builtin"]["engine"], "builtin")
        for engine, j in got.items():
            f = [x for x in j["findings"] if x["id"] == "cleartext-auth"][0]
            self.assertEqual((f["contexts"], f["line"], f["value"]), (["protocol=pop3"], 3, "no"), engine)
            pop3 = [c for c in j["contexts"] if c["context"] == "protocol=pop3"][0]
            self.assertEqual((pop3["settings"]["ssl"]["value"], pop3["settings"]["ssl"]["line"]), ("yes", 5))
        # Includes nested 40 deep: mailward's parser stops at 32, doveconf does not. The doveconf
        # engine then judges doveconf's normalized output (`doveconf -n -P`) and says so.
        for i in range(40):
            self.write(f"n{i}.conf", f"!include n{i + 1}.conf\n")
        self.write("n40.conf", "auth_debug = yes\nremote 192.0.2.0/24 {\n  ssl = no\n}\n")
        nested = self.write("nested.conf", "!include n0.conf\n")
        self.assertEqual(audit(nested, "--engine", "builtin")[0], 1)
        rc, j, err = audit(nested, "--engine", "doveconf")
        self.assertEqual(rc, 2, err)
        self.assertIn("judged on `doveconf -n` output", j["warnings"][0])
        self.assertEqual(sorted((f["id"], tuple(f["contexts"])) for f in j["findings"]),
                         [("auth-debug", ("", "remote=192.0.2.0/24")), ("ssl-disabled", ("remote=192.0.2.0/24",))])
        # A 2.4 config on this 2.3 host: auto judges it with the builtin parser and says why.
        conf24 = self.write("24.conf", "dovecot_config_version = 2.4.0\ndovecot_storage_version = 2.4.0\n"
                                       "auth_allow_cleartext = yes\n")
        rc, j, err = audit(conf24)
        self.assertEqual((rc, j["engine"], j["version"]), (2, "builtin", "2.4"), err)
        self.assertIn("judged by the builtin parser", j["warnings"][0])
        self.assertEqual([f["id"] for f in j["findings"]], ["cleartext-auth"])
        self.assertEqual(audit(conf24, "--engine", "doveconf")[0], 1)  # asked for explicitly: doveconf's error
        # A host without doveconf (a config repository in CI): auto falls back to the builtin parser.
        env = dict(os.environ, PATH=self.dir)
        p = run([MAILWARD, "--policy", "/nonexistent", "--format", "json", "audit", "dovecot", "--config", conf],
                check=False, env=env)
        self.assertEqual((p.returncode, json.loads(p.stdout)["engine"]), (2, "builtin"))
        p = run([MAILWARD, "--policy", "/nonexistent", "audit", "dovecot", "--engine", "doveconf", "--config", conf],
                check=False, env=env)
        self.assertEqual(p.returncode, 1)
        self.assertIn("doveconf is not installed", p.stderr)
        p = run([MAILWARD, "--policy", "/nonexistent", "audit", "dovecot", "--engine", "nonsense", "--config", conf],
                check=False)
        self.assertNotIn(p.returncode, (0, 2))
        self.assertIn("nonsense", p.stderr)


class Fix(MailwardCase):
    def test_fix_writes_a_drop_in_that_doveconf_accepts(self):
        tree = os.path.join(self.dir, "dovecot")
        shutil.copytree("/etc/dovecot", tree, symlinks=True)
        bad = os.path.join(tree, "conf.d", "50-admin.conf")
        with open(bad, "w") as f:
            f.write("auth_debug = yes\nauth_verbose_passwords = plain\ndisable_plaintext_auth = no\nssl_min_protocol = TLSv1\n")
        conf = os.path.join(tree, "dovecot.conf")
        before = {p: read(p) for p in (conf, bad)}
        rc, j, _ = audit(conf)
        self.assertEqual(rc, 2)
        self.assertEqual(sorted({f["id"] for f in j["findings"]}),
                         ["auth-debug", "auth-verbose-passwords", "cleartext-auth", "plaintext-listener", "weak-tls-protocol"])
        rc, j, err = audit(conf, "--fix")
        self.assertEqual(rc, 0, (err, j))
        dropin = os.path.join(tree, "conf.d", "99-mailward-hardening.conf")
        self.assertEqual(j["fix"]["dropin"], dropin)
        self.assertEqual(j["fix"]["checked"], "doveconf -n accepts the configuration")
        self.assertIn("reload", j["fix"]["reload"])
        self.assertEqual(j["findings"], [])
        self.assertEqual(doveconf(conf, "auth_verbose_passwords"), "no")
        # The admin's own files are untouched.
        self.assertEqual({p: read(p) for p in (conf, bad)}, before)

    def test_fix_refuses_without_an_include_folder(self):
        conf = self.write("lonely.conf", "auth_debug = yes\n")
        rc, j, err = audit(conf, "--fix")
        self.assertEqual(rc, 1)
        self.assertIn("!include conf.d/*.conf", err)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "conf.d")))


class CheckWithAudit(MailwardCase):
    def test_check_runs_the_audit_and_honours_ignore(self):
        conf = self.write("d.conf", "auth_debug = yes\n")
        base = "version: 1\nports:\n  imaps: {state: open}\ndovecot:\n  config: " + conf + "\n"
        # Sandbox waits until the namespace exists before anything enters it (a bare unshare +
        # sleep could let apply run in the machine's own namespace).
        ns = Sandbox()
        self.addCleanup(ns.close)
        enter = lambda argv, check=False: ns.run(argv, check=check)
        policy = self.write("policy.yaml", base)
        self.mw(enter, "apply", policy=policy, check=True)
        rc, j = self.mw_json(enter, "check", "--no-probe", policy=policy)
        self.assertEqual(rc, 2)
        self.assertTrue(j["in_sync"])
        self.assertEqual([f["id"] for f in j["audit"]["findings"]], ["auth-debug"])
        policy = self.write("policy.yaml", base + "  ignore: [auth-debug]\n")
        rc, j = self.mw_json(enter, "check", "--no-probe", policy=policy)
        self.assertEqual(rc, 0, j)
        self.assertEqual(j["audit"]["ignored"], ["auth-debug"])


if __name__ == "__main__":
    unittest.main()
