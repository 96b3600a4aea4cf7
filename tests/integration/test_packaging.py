"""Running it for real: install layout, systemd units (verified, sandboxing scored), the .deb
(contents, dependencies, lintian, hardening, man page, copyright, changelog), bash completion,
--help and --version from an install, the metrics file and the journal priorities of `check`."""
import gzip
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest

from mwtest import MAILWARD, MailwardCase, Sandbox, run

BUILD = os.environ.get("MAILWARD_BUILD_DIR", os.path.join(os.path.dirname(MAILWARD)))
SOURCE = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
def read(path):
    with open(path) as f:
        return f.read()


UNITS = ("mailward-check.service", "mailward-check.timer", "mailward-apply.service")


class Install(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="mwinstall")
        cls.root = cls.tmp.name
        run(["cmake", "--install", BUILD, "--prefix", "/usr"], env=dict(os.environ, DESTDIR=cls.root))

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_layout_and_binary(self):
        for f in ["usr/sbin/mailward", "usr/share/mailward/policies/default.yaml",
                  "usr/share/mailward/templates/dovecot/99-mailward-hardening-2.3.conf",
                  "usr/share/man/man8/mailward.8.gz", "usr/share/bash-completion/completions/mailward",
                  "usr/share/doc/mailward/copyright", "usr/share/doc/mailward/changelog.Debian.gz"] + \
                 [f"usr/lib/systemd/system/{u}" for u in UNITS]:
            self.assertTrue(os.path.exists(os.path.join(self.root, f)), f)
        binary = os.path.join(self.root, "usr/sbin/mailward")
        self.assertIn("Subcommands:", run([binary, "--help"]).stdout)
        self.assertRegex(run([binary, "--version"]).stdout, r"^mailward \d+\.\d+\.\d+")
        # The installed example policy is valid.
        run([binary, "--policy", os.path.join(self.root, "usr/share/mailward/policies/default.yaml"), "validate"])
        # The completion script loads in bash and completes commands.
        out = run(["bash", "-c", f"source {self.root}/usr/share/bash-completion/completions/mailward; "
                   "COMP_WORDS=(mailward ap); COMP_CWORD=1; _mailward; echo ${COMPREPLY[@]}"]).stdout
        self.assertEqual(out.strip(), "apply")

    def test_units_verify_and_score(self):
        d = os.path.join(self.root, "verify")
        os.makedirs(d)
        for u in UNITS:  # point ExecStart at the installed binary so verify can check it
            with open(os.path.join(self.root, "usr/lib/systemd/system", u)) as f:
                text = f.read().replace("/usr/sbin/mailward", os.path.join(self.root, "usr/sbin/mailward"))
            with open(os.path.join(d, u), "w") as f:
                f.write(text)
        env = dict(os.environ, MANPATH=os.path.join(self.root, "usr/share/man"))
        p = subprocess.run(["systemd-analyze", "verify", *UNITS], cwd=d, capture_output=True, text=True, env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr.strip(), "")
        for u in ("mailward-check.service", "mailward-apply.service"):
            out = run(["systemd-analyze", "security", "--offline=true", u], cwd=d).stdout
            score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", out).group(1))
            self.assertLessEqual(score, 2.0, u)
        timer = read(os.path.join(d, "mailward-check.timer"))
        self.assertIn("OnUnitActiveSec=15min", timer)
        self.assertIn("OnBootSec=", timer)
        self.assertIn("RandomizedDelaySec=", timer)


def unit_values(text, key):
    """Every value of `key=` in a unit file, split on whitespace, in order."""
    out = []
    for line in text.splitlines():
        if line.startswith(key + "="):
            out += line[len(key) + 1:].split()
    return out


DEBIAN_NFTABLES_CONF = """#!/usr/sbin/nft -f

flush ruleset

table inet filter {
	chain input {
		type filter hook input priority filter;
	}
	chain forward {
		type filter hook forward priority filter;
	}
	chain output {
		type filter hook output priority filter;
	}
}
"""


class BootAndReload(MailwardCase):
    """mailward-apply.service runs where nftables.service does (before network-pre.target, after
    every other firewall loader) and applies again when nftables.service reloads or restarts."""

    def setUp(self):
        super().setUp()
        self.unit = read(os.path.join(SOURCE, "systemd", "mailward-apply.service"))

    def test_ordering_and_condition(self):
        u = self.unit
        self.assertEqual(unit_values(u, "DefaultDependencies"), ["no"])
        self.assertIn("network-pre.target", unit_values(u, "Before"))
        self.assertIn("network-pre.target", unit_values(u, "Wants"))
        self.assertNotIn("network-pre.target", unit_values(u, "After"))
        for other in ("nftables.service", "ufw.service", "netfilter-persistent.service", "local-fs.target"):
            self.assertIn(other, unit_values(u, "After"), other)
        self.assertEqual(unit_values(u, "ConditionPathExists"), ["/etc/mailward/policy.yaml"])
        for rel in ("PartOf", "ReloadPropagatedFrom"):
            self.assertIn("nftables.service", unit_values(u, rel), rel)
            self.assertIn("netfilter-persistent.service", unit_values(u, rel), rel)
        self.assertEqual(unit_values(u, "RemainAfterExit"), ["yes"])  # so that a reload reaches it

    def unit_argv(self, key, policy):
        """The unit's command, pointed at the build and at this test's policy and state dir."""
        argv = unit_values(self.unit, key)
        self.assertEqual(argv[0], "/usr/sbin/mailward")
        argv = [MAILWARD] + [self.state if a == "/var/lib/mailward" else a for a in argv[1:]]
        return argv + ["--policy", policy]

    def test_reload_of_debian_nftables_conf_puts_the_table_back(self):
        ns = Sandbox()
        self.addCleanup(ns.close)
        policy = self.write("policy.yaml", "version: 1\nbackend: nftables\nallowlists:\n  office: [198.51.100.0/24]\n"
                            "ports:\n  imap: {state: closed, allow: [office]}\n  imaps: {state: open}\n")
        conf = self.write("nftables.conf", DEBIAN_NFTABLES_CONF)
        has_table = lambda: ns.run(["nft", "list", "tables"]).stdout.count("table inet mailward") == 1
        # Boot: nftables.service (ExecStart=nft -f /etc/nftables.conf), then this unit's ExecStart.
        ns.run(["nft", "-f", conf])
        ns.run(self.unit_argv("ExecStart", policy))
        self.assertTrue(has_table())
        self.assertIn("table inet filter", ns.run(["nft", "list", "tables"]).stdout)
        # `systemctl reload nftables`: nftables.service's ExecReload flushes the whole ruleset ...
        ns.run(["nft", "-f", conf])
        self.assertFalse(has_table())
        # ... and the reload propagates to this unit, whose ExecReload runs after it.
        t0 = time.monotonic()
        ns.run(self.unit_argv("ExecReload", policy))
        elapsed = time.monotonic() - t0
        self.assertTrue(has_table())
        self.assertLess(elapsed, 5.0)
        plan = run(["nsenter", "-t", str(ns.pid), "-n", MAILWARD, "--policy", policy, "--state-dir", self.state,
                    "plan"], check=False)
        self.assertEqual(plan.returncode, 0, plan.stdout + plan.stderr)
        # The admin's table survived beside it.
        self.assertIn("table inet filter", ns.run(["nft", "list", "tables"]).stdout)
        # `systemctl restart nftables`: ExecStop flushes, ExecStart loads, PartOf= restarts this unit.
        ns.run(["nft", "flush", "ruleset"])
        ns.run(["nft", "-f", conf])
        ns.run(self.unit_argv("ExecStart", policy))
        self.assertTrue(has_table())

    def test_netfilter_persistent_restart_puts_the_chain_back(self):
        # netfilter-persistent loads /etc/iptables/rules.v4 with iptables-restore, which replaces
        # the whole filter table; PartOf= restarts this unit after it.
        ns = Sandbox()
        self.addCleanup(ns.close)
        policy = self.write("policy.yaml", "version: 1\nbackend: iptables\nports:\n  imap: {state: closed}\n")
        rules = self.write("rules.v4", "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                           "-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n")
        has_chain = lambda: ":MAILWARD" in ns.run(["iptables-save", "-t", "filter"]).stdout
        ns.run(self.unit_argv("ExecStart", policy))
        self.assertTrue(has_chain())
        ns.run(["iptables-restore", rules])
        self.assertFalse(has_chain())
        ns.run(self.unit_argv("ExecStart", policy))
        self.assertTrue(has_chain())
        self.assertIn("--dport 22 -j ACCEPT", ns.run(["iptables-save", "-t", "filter"]).stdout)


def man_sections(troff):
    """{section title: its troff text} of a man page."""
    out, title = {}, None
    for line in troff.splitlines():
        m = re.match(r'\.SH\s+"?([^"]*)"?\s*$', line)
        if m:
            title = m.group(1).strip()
            out[title] = ""
        elif title:
            out[title] += line + "\n"
    return out


def help_subcommands(binary):
    """The subcommands `mailward --help` lists."""
    text = run([binary, "--help"]).stdout
    block = text.split("Subcommands:", 1)[1]
    return [m.group(1) for m in re.finditer(r"^  (\S+)\s", block, re.M)]


class Deb(unittest.TestCase):
    """The .deb as `cpack -G DEB` builds it, checked as Debian would: lintian, the binary's
    hardening, the documentation an admin gets."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="mwdeb")
        d = cls.tmp.name
        run(["cpack", "-G", "DEB", "--config", os.path.join(BUILD, "CPackConfig.cmake")], cwd=d)
        debs = [f for f in os.listdir(d) if f.endswith(".deb")]
        assert len(debs) == 1, os.listdir(d)
        cls.deb = os.path.join(d, debs[0])
        cls.root = os.path.join(d, "root")
        run(["dpkg-deb", "-x", cls.deb, cls.root])
        cls.info = run(["dpkg-deb", "-I", cls.deb]).stdout
        cls.fields = {k: run(["dpkg-deb", "-f", cls.deb, k]).stdout.strip()
                      for k in ("Package", "Version", "Maintainer", "Depends", "Recommends", "Suggests",
                                "Description", "Section")}

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def path(self, rel):
        return os.path.join(self.root, rel)

    def test_deb_contents_and_dependencies(self):
        contents = run(["dpkg-deb", "-c", self.deb]).stdout
        for f in ["./usr/sbin/mailward", "./usr/lib/systemd/system/mailward-check.timer",
                  "./usr/lib/systemd/system/mailward-check.service", "./usr/share/man/man8/mailward.8.gz",
                  "./usr/share/mailward/policies/default.yaml", "./usr/share/doc/mailward/copyright",
                  "./usr/share/doc/mailward/changelog.Debian.gz",
                  "./usr/share/bash-completion/completions/mailward"]:
            self.assertIn(f, contents)
        self.assertNotIn("./usr/share/man/man8/mailward.8\n", contents)  # only the compressed one
        self.assertEqual(self.fields["Package"], "mailward")
        self.assertEqual(self.fields["Section"], "admin")
        for lib in ("libnftnl", "libmnl", "libyaml-cpp", "libssl"):
            self.assertIn(lib, self.fields["Depends"])
        recommends = [r.strip() for r in self.fields["Recommends"].split(",")]
        for p in ("nftables", "iptables", "ipset", "dovecot-core"):
            self.assertIn(p, recommends)
        self.assertIn("ufw", [r.strip() for r in self.fields["Suggests"].split(",")])
        # A real contact, a summary and an extended description of more than one paragraph.
        self.assertNotRegex(self.fields["Maintainer"], r"root@|localhost")
        self.assertRegex(self.fields["Maintainer"], r"^[^<>]+ <[^@<>\s]+@[^@<>\s]+\.[a-z]+>$")
        summary, *extended = self.fields["Description"].splitlines()
        self.assertTrue(summary.strip())
        self.assertGreaterEqual(len(extended), 8)
        self.assertIn(".", [line.strip() for line in extended])

    def test_lintian_reports_no_errors(self):
        if not shutil.which("lintian"):
            self.skipTest("lintian is not installed (scripts/install-deps.sh installs it)")
        p = run(["lintian", "--tag-display-limit", "0", "--pedantic", self.deb], check=False)
        tags = [line for line in p.stdout.splitlines() if re.match(r"^[EWIPX]: ", line)]
        errors = [t for t in tags if t.startswith("E: ")]
        self.assertEqual(errors, [], p.stdout)
        # lintian exits 1 only for errors (its default --fail-on error).
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        # Nothing about the binary, the man page, the copyright or the changelog either.
        for t in tags:
            self.assertNotRegex(t, r"unstripped|hardening|manpage|copyright|changelog|description|contact", t)

    def test_binary_is_stripped_and_hardened(self):
        binary = self.path("usr/sbin/mailward")
        sections = run(["readelf", "-S", "-W", binary]).stdout
        for s in (".symtab", ".debug_info", ".comment"):
            self.assertNotIn(s, sections)
        header = run(["readelf", "-h", binary]).stdout
        self.assertRegex(header, r"Type:\s+DYN")  # PIE
        dynamic = run(["readelf", "-d", "-W", binary]).stdout
        self.assertRegex(dynamic, r"\(FLAGS\)\s+BIND_NOW|\(FLAGS_1\)\s+Flags:.*\bNOW\b")
        self.assertRegex(dynamic, r"\(FLAGS_1\)\s+Flags:.*\bPIE\b")
        self.assertIn("GNU_RELRO", run(["readelf", "-l", "-W", binary]).stdout)
        syms = run(["readelf", "--dyn-syms", "-W", binary]).stdout
        self.assertIn("__stack_chk_fail", syms)
        fortified = set(re.findall(r"\b(__\w+_chk)\b", syms)) - {"__stack_chk_fail"}
        self.assertGreaterEqual(len(fortified), 2, fortified)  # _FORTIFY_SOURCE's checked calls
        # Stripped, it still runs.
        self.assertRegex(run([binary, "--version"]).stdout, r"^mailward \d+\.\d+\.\d+")

    def test_man_page(self):
        gz = self.path("usr/share/man/man8/mailward.8.gz")
        with open(gz, "rb") as f:
            head = f.read(10)
        # gzip -9n: no file name and no time stamp in the header (a reproducible package).
        self.assertEqual(head[:2], b"\x1f\x8b")
        self.assertEqual(head[3] & 0x08, 0, "FNAME set")
        self.assertEqual(head[4:8], b"\0\0\0\0", "MTIME set")
        with gzip.open(gz, "rt") as f:
            troff = f.read()
        with open(os.path.join(SOURCE, "doc", "mailward.8")) as f:
            self.assertEqual(troff, f.read())
        sec = man_sections(troff)
        for title in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "OPTIONS", "POLICY FORMAT", "EXIT STATUS",
                      "ENVIRONMENT", "FILES", "EXAMPLES", "SEE ALSO"):
            self.assertIn(title, sec)
        for code in ("0", "1", "2", "3"):
            self.assertRegex(sec["EXIT STATUS"], rf"(?m)^\.TP\n\.B {code}\n")
        self.assertIn("MAILWARD_TIMING", sec["ENVIRONMENT"])
        self.assertNotIn("MAILWARD_TEST_FAULT", troff)
        for f in ("/etc/mailward/policy.yaml", "/var/lib/mailward", "mailward\\-check.timer",
                  "mailward\\-apply.service", "/usr/share/mailward/policies"):
            self.assertIn(f, sec["FILES"])
        self.assertRegex(sec["EXAMPLES"], r"mailward apply \\-\\-confirm \d+")
        # Every command of --help has its entry, and so has every key the policy loader accepts.
        for cmd in help_subcommands(self.path("usr/sbin/mailward")):
            self.assertRegex(sec["COMMANDS"], rf"(?m)^\.B {cmd}\b", cmd)
        for key in ("version", "backend", "allowlists", "ports", "state", "allow", "action", "rate_limit",
                    "port", "file", "tls", "min_days_left", "min_version", "dovecot", "config", "ignore"):
            self.assertIn(key + ":", sec["POLICY FORMAT"], key)
        # man renders it without a warning, and mandb can index it.
        env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
        p = run(["man", "--warnings", "-l", gz], env=env)
        self.assertEqual(p.stderr, "")
        self.assertIn("EXIT STATUS", p.stdout)
        self.assertIn("mailward - keep the mail ports", run(["lexgrog", gz]).stdout)

    def test_copyright_and_changelog(self):
        with open(self.path("usr/share/doc/mailward/copyright")) as f:
            copyright = f.read()
        self.assertTrue(copyright.startswith(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"))
        self.assertRegex(copyright, r"(?m)^Files: \*\nCopyright: .+\nLicense: Expat$")
        self.assertRegex(copyright, r"(?m)^License: Expat\n Permission is hereby granted")
        with gzip.open(self.path("usr/share/doc/mailward/changelog.Debian.gz"), "rt") as f:
            first = f.readline()
        # The top entry is the package's version.
        self.assertEqual(first.split()[:2], ["mailward", f"({self.fields['Version']})"])
        if shutil.which("dpkg-parsechangelog"):
            out = run(["dpkg-parsechangelog", "-l", self.path("usr/share/doc/mailward/changelog.Debian.gz"),
                       "-S", "Version"], check=False)
            if out.returncode == 0:  # needs the file uncompressed on some dpkg versions
                self.assertEqual(out.stdout.strip(), self.fields["Version"])


def complete(words, script=os.path.join(SOURCE, "completions", "mailward.bash"), cwd=None):
    """COMPREPLY of the completion function for the command line `words` (the last one is the
    word being completed), from a real bash that sourced the script."""
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    p = run(["bash", "--norc", "--noprofile", "-c",
             f"source '{script}' && COMP_WORDS=({quoted}) && COMP_CWORD={len(words) - 1} && "
             "COMP_LINE=\"${COMP_WORDS[*]}\" && COMP_POINT=${#COMP_LINE} && _mailward && "
             "printf '%s\\n' \"${COMPREPLY[@]}\""], cwd=cwd)
    return [w for w in p.stdout.split("\n") if w]


class Completion(unittest.TestCase):
    """bash completion, sourced in bash and called as bash calls it."""

    def test_commands_and_options(self):
        self.assertEqual(complete(["mailward", "ap"]), ["apply"])
        every = complete(["mailward", ""])
        for cmd in help_subcommands(MAILWARD) + ["remove"]:
            self.assertIn(cmd, every)
        for opt in ("--policy", "--backend", "--state-dir", "--format", "--quiet", "--verbose", "--lock-timeout",
                    "--help", "--version"):
            self.assertIn(opt, every)
        self.assertEqual(set(complete(["mailward", "apply", "--"])) >= {"--confirm", "--auto-confirm", "--force",
                                                                        "--no-probe", "--policy"}, True)
        self.assertIn("--no-probe", complete(["mailward", "check", "--"]))
        self.assertEqual(set(complete(["mailward", "rollback", "--"])) >= {"--to", "--dry-run"}, True)
        self.assertIn("--dry-run", complete(["mailward", "remove", "--"]))
        self.assertEqual(complete(["mailward", "audit", ""]), ["dovecot"])
        self.assertIn("--fix", complete(["mailward", "audit", "dovecot", "--"]))
        self.assertEqual(set(complete(["mailward", "probe", "--"])) >= {"--source", "--timeout", "--deadline"}, True)
        # A value is not taken for the command: `--policy plan` is a file named plan.
        self.assertIn("validate", complete(["mailward", "--policy", "plan", ""]))
        self.assertIn("--to", complete(["mailward", "--state-dir", "/tmp", "rollback", "--"]))

    def test_values(self):
        self.assertEqual(complete(["mailward", "--format", ""]), ["text", "json"])
        self.assertEqual(complete(["mailward", "--format", "=", "j"]), ["json"])  # --format=j
        self.assertEqual(complete(["mailward", "--backend", ""]), ["auto", "nftables", "iptables", "ufw"])
        self.assertEqual(complete(["mailward", "check", "--fail-on", "m"]), ["medium"])
        for words in (["mailward", "apply", "--confirm", ""], ["mailward", "probe", "--timeout", ""],
                      ["mailward", "probe", "--deadline", ""], ["mailward", "--lock-timeout", ""]):
            values = complete(words)
            self.assertTrue(values, words)
            self.assertTrue(all(v.isdigit() for v in values), (words, values))
        self.assertIn("60", complete(["mailward", "apply", "--confirm", ""]))
        # --source: this host's own addresses (probes leave from one of them).
        sources = complete(["mailward", "probe", "--source", ""])
        self.assertIn("127.0.0.1", sources)
        self.assertIn("::1", sources)
        self.assertTrue(all("/" not in a for a in sources), sources)
        self.assertIn("lo", complete(["mailward", "explain", "143", "--iif", ""]))
        self.assertEqual(complete(["mailward", "explain", "99"]), ["993", "995"])

    def test_files_directories_and_snapshot_ids(self):
        with tempfile.TemporaryDirectory(prefix="mwcomp") as d:
            os.makedirs(os.path.join(d, "policy.d"))
            os.makedirs(os.path.join(d, "state", "snapshots"))
            for f in ("policy.yaml", "state/snapshots/00000000000000000007.snap",
                      "state/snapshots/00000000000000000012.snap", "state/snapshots/00000000000000000012.elements"):
                open(os.path.join(d, f), "w").close()
            self.assertEqual(sorted(complete(["mailward", "--policy", f"{d}/pol"])),
                             [f"{d}/policy.d", f"{d}/policy.yaml"])
            self.assertEqual(complete(["mailward", "--policy", "=", f"{d}/policy.y"]), [f"{d}/policy.yaml"])
            self.assertEqual(complete(["mailward", "init", "-o", "pol"], cwd=d), ["policy.d", "policy.yaml"])
            self.assertEqual(complete(["mailward", "--state-dir", f"{d}/"]), [f"{d}/policy.d", f"{d}/state"])
            self.assertEqual(sorted(complete(["mailward", "--state-dir", f"{d}/state", "rollback", "--to", ""])),
                             ["12", "7"])

    def test_filenames_option_in_an_interactive_bash(self):
        # -o filenames is only visible through readline: a directory completes with its slash.
        import pty
        import select
        with tempfile.TemporaryDirectory(prefix="mwcomp") as d:
            os.makedirs(os.path.join(d, "policy.d"))
            rc = os.path.join(d, "rc")
            with open(rc, "w") as f:
                f.write(f"source {SOURCE}/completions/mailward.bash\nPS1='$ '\n")
            pid, fd = pty.fork()
            if pid == 0:
                os.chdir(d)
                os.execvpe("bash", ["bash", "--noprofile", "--rcfile", rc, "-i"],
                           dict(os.environ, TERM="dumb", INPUTRC="/dev/null"))
            out = b""
            try:
                os.write(fd, b"mailward --policy polic\t")
                deadline = time.monotonic() + 20
                while b"policy.d/" not in out and time.monotonic() < deadline:
                    r, _, _ = select.select([fd], [], [], 0.5)
                    if r:
                        try:
                            out += os.read(fd, 4096)
                        except OSError:
                            break
            finally:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                os.close(fd)
            self.assertIn(b"policy.d/", out)


TLS_SERVER = """
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 993)); s.listen(8)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    try:
        t = ctx.wrap_socket(c, server_side=True)
        t.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\\r\\n")
        t.recv(100)
        t.close()
    except (ssl.SSLError, OSError):
        c.close()
"""


def metrics(text):
    """{name+labels: value} of an exposition text (comments left out)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


class Metrics(MailwardCase):
    def setUp(self):
        super().setUp()
        self.ns = Sandbox()
        self.addCleanup(self.ns.close)
        # A textfile directory as node_exporter's package makes it: others may enter it.
        self.prom_dir = os.path.join(self.dir, "node-exporter")
        os.makedirs(self.prom_dir)
        os.chmod(self.dir, 0o755)
        os.chmod(self.prom_dir, 0o755)
        self.prom = os.path.join(self.prom_dir, "mailward.prom")
        self.env = dict(os.environ, JOURNAL_STREAM="8:1234")

    def check(self, policy, *args, umask=None):
        return run(["nsenter", "-t", str(self.ns.pid), "-n", MAILWARD, "--policy", policy, "--state-dir", self.state,
                    "-q", "check", "--metrics-file", self.prom, *args], check=False, env=self.env,
                   preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)

    def promtool(self):
        p = run(["promtool", "check", "metrics"], check=False, input=read(self.prom))
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_metrics_file_and_journal_priority(self):
        policy = self.write("p.yaml", "version: 1\nports:\n  imap: {state: closed}\n  imaps: {state: open}\n")
        p = self.check(policy)
        self.assertEqual(p.returncode, 2)
        self.assertIn("<4>mailward check: NOT clean", p.stderr)
        self.assertIn("1 of 1 probes failed", p.stderr)
        self.assertIn("Dovecot audit skipped", p.stderr)
        text = read(self.prom)
        m = metrics(text)
        self.assertEqual(m["mailward_up"], 1)
        self.assertEqual(m["mailward_in_sync"], 0)
        self.assertGreaterEqual(m["mailward_drift_changes"], 1)
        self.assertEqual(m['mailward_probe_as_policy{host="127.0.0.1",port="993"}'], 0)
        self.assertEqual(m['mailward_backend_info{backend="nftables"}'], 1)
        self.assertIn('mailward_firewall_manager_active{manager="ufw"}', m)
        self.assertIn('mailward_firewall_manager_active{manager="firewalld"}', m)
        self.assertNotIn("mailward_dovecot_findings", text)  # no dovecot block: not audited, not "0"
        self.assertNotIn("mailward_last_apply_success_timestamp_seconds", text)  # never applied
        self.assertRegex(text, r"mailward_last_run_timestamp_seconds \d+\.\d+")
        self.assertEqual([f for f in os.listdir(self.prom_dir) if ".tmp" in f], [])  # written by rename
        self.promtool()
        before = time.time()
        run(["nsenter", "-t", str(self.ns.pid), "-n", MAILWARD, "--policy", policy, "--state-dir", self.state, "-q",
             "apply", "--no-probe"])
        p = self.check(policy, "--no-probe")
        self.assertEqual(p.returncode, 0, p.stderr)
        # --no-probe says so, and claims nothing about probes.
        self.assertIn("<6>mailward check: clean", p.stderr)
        self.assertIn("probes skipped (--no-probe)", p.stderr)
        self.assertNotIn("probes ok", p.stderr)
        text = read(self.prom)
        m = metrics(text)
        self.assertEqual(m["mailward_in_sync"], 1)
        self.assertNotIn("mailward_probe_", text)
        self.assertGreaterEqual(m["mailward_last_apply_success_timestamp_seconds"], before - 1)
        self.promtool()

    def test_failure_writes_only_what_is_known(self):
        bad = self.write("bad.yaml", "version: 2\n")
        p = self.check(bad)
        self.assertEqual(p.returncode, 1)
        self.assertIn("<3>mailward check: error", p.stderr)
        text = read(self.prom)
        m = metrics(text)
        self.assertEqual(m["mailward_up"], 0)
        for unknown in ("mailward_in_sync", "mailward_conflicts", "mailward_drift_changes", "mailward_dovecot_findings",
                        "mailward_probe_", "mailward_backend_info"):
            self.assertNotIn(unknown, text)
        self.assertIn("mailward_last_run_timestamp_seconds", m)
        self.promtool()

    def test_missing_metrics_directory_is_an_error(self):
        policy = self.write("p.yaml", "version: 1\nports:\n  imap: {state: closed}\n")
        missing = os.path.join(self.dir, "no-such-dir", "mailward.prom")
        p = run(["nsenter", "-t", str(self.ns.pid), "-n", MAILWARD, "--policy", policy, "--state-dir", self.state,
                 "check", "--metrics-file", missing], check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("metrics directory does not exist", p.stderr)

    def test_readable_by_node_exporter_despite_umask(self):
        policy = self.write("p.yaml", "version: 1\nports:\n  imap: {state: closed}\n")
        self.check(policy, "--no-probe", umask=0o077)  # the unit's UMask=0077
        self.assertEqual(os.stat(self.prom).st_mode & 0o777, 0o644)
        # node_exporter runs as an unprivileged user (prometheus): read it as nobody.
        p = run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat", self.prom], check=False)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("mailward_up 1", p.stdout)

    def test_cert_expiry_per_probed_port(self):
        d = self.dir
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{d}/key.pem", "-out",
             f"{d}/cert.pem", "-days", "2", "-subj", "/CN=mail.test"])
        server = subprocess.Popen(["nsenter", "-t", str(self.ns.pid), "-n", "python3", "-c", TLS_SERVER,
                                   f"{d}/cert.pem", f"{d}/key.pem"], stdout=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (server.kill(), server.wait(), server.stdout.close()))
        self.assertEqual(server.stdout.readline().strip(), "ready")
        policy = self.write("p.yaml", "version: 1\nports:\n  imaps: {state: open}\n")
        self.check(policy)
        m = metrics(read(self.prom))
        key = '{host="127.0.0.1",port="993"}'
        self.assertEqual(m["mailward_probe_open" + key], 1)
        left = m["mailward_tls_cert_expiry_seconds" + key]
        self.assertGreater(left, 86400)          # -days 2: between one and two days left
        self.assertLessEqual(left, 2 * 86400)
        self.assertAlmostEqual(m["mailward_tls_cert_not_after_timestamp_seconds" + key], time.time() + left, delta=120)
        self.promtool()

    def test_sigpipe_does_not_kill_mailward(self):
        # OpenSSL writes a probe's close_notify with write(): a peer that already closed must give
        # EPIPE, not SIGPIPE (which killed applies between their commit and their confirm). Shown
        # deterministically with stdout, a pipe whose reader is gone before mailward starts.
        r, w = os.pipe()
        os.close(r)
        p = subprocess.run([MAILWARD, "--help"], stdout=w, stderr=subprocess.DEVNULL)
        os.close(w)
        self.assertNotEqual(p.returncode, -13)


class FailOn(MailwardCase):
    """check --fail-on: findings below the threshold are reported, not failed."""

    def test_fail_on_threshold(self):
        ns = Sandbox()
        self.addCleanup(ns.close)
        conf = self.write("dovecot.conf", "mail_debug = yes\n")  # one low finding
        os.chmod(conf, 0o644)
        policy = self.write("p.yaml", f"version: 1\nports:\n  imap: {{state: closed}}\ndovecot:\n  config: {conf}\n")
        run(["nsenter", "-t", str(ns.pid), "-n", MAILWARD, "--policy", policy, "--state-dir", self.state, "-q",
             "apply", "--no-probe"])
        env = dict(os.environ, JOURNAL_STREAM="8:1234")
        def check(*args):
            return run(["nsenter", "-t", str(ns.pid), "-n", MAILWARD, "--policy", policy, "--state-dir", self.state,
                        "check", "--no-probe", *args], check=False, env=env)
        p = check()  # default: every finding fails
        self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
        self.assertIn("1 Dovecot finding (1 at or above --fail-on info)", p.stderr)
        p = check("--fail-on", "low")
        self.assertEqual(p.returncode, 2)
        p = check("--fail-on", "medium")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("mail-debug", p.stdout)  # still reported
        self.assertIn("<6>mailward check: clean", p.stderr)
        self.assertIn("1 Dovecot finding (0 at or above --fail-on medium)", p.stderr)
        j = json.loads(run(["nsenter", "-t", str(ns.pid), "-n", MAILWARD, "--policy", policy, "--state-dir", self.state,
                            "--format", "json", "check", "--no-probe", "--fail-on", "high"], check=False).stdout)
        self.assertEqual((j["fail_on"], j["probed"], j["probes"], j["clean"]), ("high", False, [], True))
        p = check("--fail-on", "bogus")
        self.assertEqual(p.returncode, 1)
        # The check unit uses medium.
        unit = read(os.path.join(SOURCE, "systemd", "mailward-check.service"))
        self.assertIn("--fail-on medium", unit)


if __name__ == "__main__":
    unittest.main()
