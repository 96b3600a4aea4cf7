"""The Ansible module, run by ansible-playbook (ansible-core from Debian) against a namespace:
check mode changes nothing and says what would change, the first run changes, the second not.
Also the role: policy pushed, validated and applied."""
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import unittest

from mwtest import MAILWARD, MailwardCase, Sandbox, run

HERE = os.path.dirname(os.path.abspath(__file__))
COLLECTIONS = os.path.normpath(os.path.join(HERE, "..", "..", "ansible"))
# The fleet's time budget is for an idle machine; MAILWARD_LOAD_FACTOR stretches it under load.
LOAD_FACTOR = float(os.environ.get("MAILWARD_LOAD_FACTOR", "1"))
POLICY = """\
version: 1
allowlists:
  office: [198.51.100.0/24]
ports:
  imap: {state: closed, allow: [office]}
  imaps: {state: open}
"""


class Ansible(MailwardCase):
    def setUp(self):
        super().setUp()
        self.ns = Sandbox()
        self.addCleanup(self.ns.close)
        # mailward inside the test's namespace, as the module's `binary`.
        self.wrapper = self.write("mailward-ns", f"#!/bin/sh\nexec nsenter -t {self.ns.pid} -n {MAILWARD} \"$@\"\n")
        os.chmod(self.wrapper, 0o755)
        self.policy = self.write("policy.yaml", POLICY)
        self.write("inventory", "localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n")
        self.started = time.time() - 1

    def playbook(self, body, *args, full=False):
        path = self.write("play.yml", body)
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_STDOUT_CALLBACK="results_json",
                   ANSIBLE_CALLBACK_PLUGINS=os.path.join(HERE, "ansible_callbacks"),
                   ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="false")
        p = subprocess.run(["ansible-playbook", "-i", os.path.join(self.dir, "inventory"), path, *args],
                           capture_output=True, text=True, env=env, cwd=self.dir)
        self.assertEqual(p.returncode, 0, p.stdout[-3000:] + p.stderr[-3000:])
        out = json.loads(p.stdout.strip().splitlines()[-1])
        return out["tasks"] if full else [t["result"] for t in out["tasks"]]

    def ruleset(self):
        return self.ns.run(["nft", "list", "ruleset"]).stdout

    def module_play(self, policy, **params):
        extra = "".join(f"        {k}: {v}\n" for k, v in params.items())
        return f"""
- hosts: localhost
  gather_facts: false
  tasks:
    - mailward.firewall.mailward:
        policy: {policy}
        binary: {self.wrapper}
        state_dir: {self.state}
{extra}      ignore_errors: true
"""

    def test_module_check_mode_first_and_second_run(self):
        play = self.module_play(self.policy, probe="false")
        check = self.playbook(play, "--check", "--diff")[0]
        self.assertTrue(check["changed"])
        self.assertFalse(check["in_sync"])
        self.assertEqual(check["outcome"], "planned")
        self.assertIn("table inet mailward", check["diff"]["after"])
        self.assertIn("rule mailward:143:closed", check["diff"]["after"])
        self.assertEqual(check["diff"]["before"], "")  # nothing of mailward's is live yet
        self.assertEqual(self.ruleset(), "", "check mode changed the firewall")
        first = self.playbook(play)[0]
        self.assertTrue(first["changed"])
        self.assertEqual(first["outcome"], "kept")
        self.assertIn("table inet mailward", self.ruleset())
        applied = self.ruleset()
        second = self.playbook(play)[0]
        self.assertFalse(second["changed"])
        self.assertEqual(second["outcome"], "in-sync")
        self.assertEqual(second["changes"], [])
        self.assertEqual(self.ruleset(), applied)
        check_again = self.playbook(play, "--check")[0]
        self.assertFalse(check_again["changed"])

    def test_diff_shows_the_live_rule_before(self):
        self.playbook(self.module_play(self.policy, probe="false"))
        reject = self.write("reject.yaml", POLICY.replace("imap: {state: closed, allow: [office]}",
                                                          "imap: {state: closed, allow: [office], action: reject}"))
        task = self.playbook(self.module_play(reject, probe="false"), "--check", "--diff")[0]
        before, after = task["diff"]["before"], task["diff"]["after"]
        self.assertRegex(before, r"rule mailward:143:closed .*drop")
        self.assertNotIn("reject", before)
        self.assertRegex(after, r"rule mailward:143:closed .*reject")
        self.assertNotIn("mailward:993:open", before + after)  # untouched objects are left out

    def test_module_reports_errors(self):
        bad = self.write("bad.yaml", "version: 1\nports:\n  imap: {state: shut}\n")
        task = self.playbook(self.module_play(bad))[0]
        self.assertTrue(task["failed"])
        self.assertIn("bad.yaml:3:17", task["msg"])
        self.assertEqual(self.ruleset(), "")

    def test_confirm_that_would_revert_fails_and_ends_reverted(self):
        # 993 is open in the policy and nothing listens on it in the namespace.
        task = self.playbook(self.module_play(self.policy, confirm=30, require_services="true"))[0]
        self.assertTrue(task["failed"])
        self.assertEqual(task["outcome"], "reverted")
        self.assertIn("993", task["msg"])
        self.assertFalse(task["changed"])
        # Reverted now, not at the deadline 30 s later, and nothing is left pending.
        self.assertNotIn("mailward:143:closed", self.ruleset())
        self.assertFalse(os.path.exists(os.path.join(self.state, "pending-confirm")))
        p = self.mw(self.ns.run, "confirm")
        self.assertEqual(p.returncode, 1)  # nothing to confirm

    def test_service_not_installed_yet_keeps_the_policy(self):
        task = self.playbook(self.module_play(self.policy, confirm=30))[0]
        self.assertFalse(task.get("failed", False), task)
        self.assertTrue(task["changed"])
        self.assertEqual(task["outcome"], "kept")
        self.assertIn("nothing listens on port(s) 993", task["reason"])
        self.assertIn("mailward:143:closed", self.ruleset())
        p = self.mw(self.ns.run, "confirm")
        self.assertEqual(p.returncode, 1)  # already confirmed: no revert is coming

    def test_state_absent(self):
        self.playbook(self.module_play(self.policy, probe="false"))
        self.assertIn("mailward:143:closed", self.ruleset())
        task = self.playbook(self.module_play(self.policy, state="absent"))[0]
        self.assertTrue(task["changed"], task)
        self.assertNotIn("mailward:143", self.ruleset())
        again = self.playbook(self.module_play(self.policy, state="absent"))[0]
        self.assertFalse(again["changed"])

    def role_play(self, dest, **extra):
        lines = "".join(f"        {k}: {v}\n" for k, v in extra.items())
        return f"""
- hosts: localhost
  gather_facts: false
  roles:
    - role: mailward.firewall.mailward
      vars:
        mailward_policy_src: {self.policy}
        mailward_policy_dest: {dest}
        mailward_binary: {self.wrapper}
        mailward_state_dir: {self.state}
        mailward_confirm: 30
{lines}"""

    def test_role_fresh_host_check_diff_then_apply_with_files_and_policy_d(self):
        etc = os.path.join(self.dir, "etc-mailward")  # does not exist: a fresh host
        dest = os.path.join(etc, "policy.yaml")
        partners = self.write("partners.txt", "# partners\n203.0.113.0/24\n")
        dropin = self.write("10-pop3.yaml", "version: 1\nports:\n  pop3: {state: closed, action: reject}\n")
        with open(self.policy, "w") as f:
            f.write(POLICY.replace("allowlists:\n", "allowlists:\n  partners: {file: partners.txt}\n")
                    .replace("allow: [office]", "allow: [office, partners]"))
        play = self.role_play(dest, mailward_files=f"['{partners}']", mailward_policy_d=f"['{dropin}']",
                              mailward_require_services="false")
        tasks = self.playbook(play, "--check", "--diff", full=True)
        self.assertFalse(os.path.exists(etc), "check mode created the policy directory")
        self.assertEqual(self.ruleset(), "", "check mode changed the firewall")
        apply = [t["result"] for t in tasks if "apply the mailward policy" in t["task"]]
        self.assertEqual(len(apply), 1, [(t["task"], t["result"].get("msg")) for t in tasks])
        apply = apply[0]
        self.assertTrue(apply["changed"])
        plan_diff = apply["diff"][-1]["after"]
        self.assertIn("rule mailward:110:closed", plan_diff)  # policy.d planned too
        self.assertIn("203.0.113.0/24", plan_diff)           # the file allowlist too
        files = {d["after_header"]: d for d in apply["diff"][:-1]}
        self.assertEqual(files[dest]["before"], "")          # a fresh host: no policy yet
        self.assertIn("partners", files[dest]["after"])
        self.assertIn(os.path.join(etc, "partners.txt"), files)
        tasks = self.playbook(play, full=True)
        self.assertTrue(os.path.exists(os.path.join(etc, "partners.txt")))
        self.assertTrue(os.path.exists(os.path.join(etc, "policy.d", "10-pop3.yaml")))
        self.assertEqual(os.stat(dest).st_mode & 0o777, 0o600)
        apply = [t["result"] for t in tasks if "apply the mailward policy" in t["task"]]
        self.assertEqual(len(apply), 1, [(t["task"], t["result"].get("msg")) for t in tasks])
        apply = apply[0]
        self.assertTrue(apply["changed"])
        self.assertEqual(apply["outcome"], "kept")
        rules = self.ruleset()
        self.assertIn("mailward:143:closed", rules)
        self.assertIn("mailward:110:closed", rules)
        self.assertIn("203.0.113.0/24", rules)
        tasks = self.playbook(play)
        self.assertFalse(any(t.get("changed") for t in tasks), tasks)
        self.assertEqual([f for f in os.listdir("/tmp") if f.startswith("mailward-stage-") and
                          os.stat(os.path.join("/tmp", f)).st_mtime > self.started], [])

    def test_copy_validate_inside_the_tree(self):
        # The README's recipe for ansible.builtin.copy users: validate Ansible's temporary copy
        # inside a tree that has the relative allowlist file and policy.d.
        check_dir = os.path.join(self.dir, "etc", ".policy-check")
        os.makedirs(os.path.join(check_dir, "policy.d"))
        with open(os.path.join(check_dir, "partners.txt"), "w") as f:
            f.write("203.0.113.0/24\n")
        with open(os.path.join(check_dir, "policy.d", "10-imap.yaml"), "w") as f:
            f.write("version: 1\nports:\n  imap: {state: open}\n")  # clashes with a policy naming imap
        good = self.write("good.yaml", "version: 1\nallowlists:\n  partners: {file: partners.txt}\n"
                          "ports:\n  pop3: {state: closed, allow: [partners]}\n")
        clash = self.write("clash.yaml", "version: 1\nports:\n  imap: {state: closed}\n")
        def play(src):
            return f"""
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.copy:
        src: {src}
        dest: {self.dir}/etc/policy.yaml
        validate: sh -c 'cp -- "$0" {check_dir}/policy.yaml && exec {MAILWARD} --policy {check_dir}/policy.yaml validate' %s
      ignore_errors: true
"""
        ok = self.playbook(play(good))[0]
        self.assertFalse(ok.get("failed", False), ok)
        bad = self.playbook(play(clash))[0]
        self.assertTrue(bad["failed"])
        self.assertIn("imap", bad["msg"] + bad.get("stderr", ""))

    def test_module_refuses_paths_as_file_names(self):
        dest = os.path.join(self.dir, "etc", "policy.yaml")
        play = f"""
- hosts: localhost
  gather_facts: false
  tasks:
    - mailward.firewall.mailward:
        policy: {dest}
        policy_content: "version: 1"
        files: {{"../escape.txt": "203.0.113.1"}}
        binary: {self.wrapper}
        state_dir: {self.state}
      ignore_errors: true
"""
        task = self.playbook(play)[0]
        self.assertTrue(task["failed"])
        self.assertIn("not a plain file name", task["msg"])
        self.assertFalse(os.path.exists(os.path.join(self.dir, "escape.txt")))
        self.assertFalse(os.path.exists(dest))

    def test_role_rejects_a_broken_policy_before_pushing(self):
        dest = os.path.join(self.dir, "etc-mailward", "policy.yaml")
        with open(self.policy, "w") as f:
            f.write("version: 1\nports:\n  imap: {state: closed, allow: [nobody]}\n")
        path = self.write("play.yml", self.role_play(dest))
        p = subprocess.run(["ansible-playbook", "-i", os.path.join(self.dir, "inventory"), path], capture_output=True,
                           text=True, env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_NOCOLOR="1",
                                               ANSIBLE_LOCALHOST_WARNING="false"), cwd=self.dir)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("policy.yaml:3:", p.stdout)
        self.assertIn("nobody", p.stdout)
        self.assertFalse(os.path.exists(dest))
        self.assertEqual(self.ruleset(), "")


class Sanity(unittest.TestCase):
    """ansible-test's validate-modules, run offline as `ansible-test sanity` would (it cannot
    bootstrap its own venv here), and ansible-doc."""

    def test_validate_modules(self):
        v = "/usr/lib/python3/dist-packages/ansible_test/_util/controller/sanity/validate-modules"
        coll = os.path.join(COLLECTIONS, "ansible_collections", "mailward", "firewall")
        p = subprocess.run(["/usr/bin/python3", f"{v}/validate.py", "--arg-spec", "--collection",
                            "ansible_collections/mailward/firewall", "--collection-version", "0.1.0", "--plugin-type",
                            "module", "--format", "plain", "plugins/modules/mailward.py"], capture_output=True,
                           text=True, cwd=coll, env=dict(os.environ, PYTHONPATH=v, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS))
        if "No module named 'voluptuous'" in p.stderr:
            self.skipTest("python3-voluptuous is not installed (scripts/install-deps.sh)")
        with open(os.path.join(coll, "tests", "sanity", "ignore-2.14.txt")) as f:
            ignored = [line.split()[1].split(":")[1] for line in f if line.strip()]
        errors = [line for line in (p.stdout + p.stderr).splitlines()
                  if line.strip() and not any(f"E{code}" in line for code in ignored)]
        self.assertEqual(errors, [])

    def test_ansible_doc(self):
        p = subprocess.run(["ansible-doc", "mailward.firewall.mailward"], capture_output=True, text=True,
                           env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_NOCOLOR="1"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr.strip(), "")
        for text in ("AUTHOR", "ATTRIBUTES", "EXAMPLES", "RETURN VALUES", "require_services", "policy_content",
                     "outcome"):
            self.assertIn(text, p.stdout)
        self.assertIn("op", p.stdout[p.stdout.index("RETURN VALUES"):])  # changes' contains: rendered


FLEET_POLICY = """\
version: 1
backend: nftables
allowlists:
  monitoring: [198.51.100.250/32]
ports:
  imap: {state: closed, allow: [monitoring]}
  imaps: {state: open}
"""

# 143 plain IMAP, 993 implicit TLS: what mailward's local probe of an open imaps port expects.
SERVER = (
    "import socket,select,ssl,sys\n"
    "ctx=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER);ctx.load_cert_chain(sys.argv[1],sys.argv[2])\n"
    "ls={}\n"
    "for p in (143, 993):\n"
    "  s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
    "  s.bind(('0.0.0.0',p));s.listen(64);ls[s]=p\n"
    "print('ready',flush=True)\n"
    "while True:\n"
    "  r,_,_=select.select(list(ls),[],[])\n"
    "  for s in r:\n"
    "    c,_=s.accept();c.settimeout(3)\n"
    "    try:\n"
    "      if ls[s]==993: c=ctx.wrap_socket(c,server_side=True)\n"
    "      c.sendall(b'* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hello\\r\\n')\n"
    "      f=c.makefile('rb')\n"
    "      for line in f:\n"
    "        tag=line.split(b' ')[0]\n"
    "        if b'CAPABILITY' in line: c.sendall(b'* CAPABILITY IMAP4rev1 AUTH=PLAIN\\r\\n'+tag+b' OK done\\r\\n')\n"
    "        else: c.sendall(b'* BYE\\r\\n'+tag+b' OK bye\\r\\n'); break\n"
    "      c.close()\n"
    "    except (OSError, ssl.SSLError): c.close()\n"
)


class Fleet(unittest.TestCase):
    """ansible-playbook over SSH against 8 network namespaces, each running a real sshd
    (TESTING.md's recipe), with the collection's role. h0-h5 are ordinary mail servers, h6 gets a
    broken policy, h7 has no service on 993 and require_services: its confirm would revert."""

    N = 8
    GOOD = range(6)
    BROKEN, REVERTS = 6, 7

    @classmethod
    def addr(cls, i):
        return f"198.51.100.{10 + i}"

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="mwfleet")
        d = cls.d = cls.tmp.name
        cls.procs, cls.namespaces = [], []
        try:
            cls._build()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def _build(cls):
        d = cls.d
        tag = f"{os.getpid() % 1000}{random.randint(0, 99)}"
        cls.ctl = f"mwf{tag}c"
        cls.hosts = [f"mwf{tag}h{i}" for i in range(cls.N)]
        run(["ip", "netns", "add", cls.ctl])
        cls.namespaces.append(cls.ctl)
        run(["ip", "-n", cls.ctl, "link", "set", "lo", "up"])
        run(["ip", "-n", cls.ctl, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", cls.ctl, "addr", "add", "198.51.100.250/24", "dev", "br0"])
        run(["ip", "-n", cls.ctl, "link", "set", "br0", "up"])
        for i, h in enumerate(cls.hosts):
            run(["ip", "netns", "add", h])
            cls.namespaces.append(h)
            run(["ip", "-n", h, "link", "set", "lo", "up"])
            a, b = f"f{tag}a{i}", f"f{tag}b{i}"
            run(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
            run(["ip", "link", "set", a, "netns", h])
            run(["ip", "link", "set", b, "netns", cls.ctl])
            run(["ip", "-n", cls.ctl, "link", "set", b, "master", "br0", "up"])
            run(["ip", "-n", h, "addr", "add", f"{cls.addr(i)}/24", "dev", a])
            run(["ip", "-n", h, "link", "set", a, "up"])
        os.makedirs("/run/sshd", exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{d}/id"])
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{d}/hostkey"])
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{d}/key.pem", "-out",
             f"{d}/cert.pem", "-days", "2", "-subj", "/CN=mail.test"])
        with open(f"{d}/id.pub") as f, open(f"{d}/authorized_keys", "w") as g:
            g.write(f.read())
        listed = run(["ip", "netns", "list"]).stdout
        for i, h in enumerate(cls.hosts):
            assert h in listed, h  # never enter a namespace not seen created
            p = subprocess.Popen(["ip", "netns", "exec", h, "/usr/sbin/sshd", "-D", "-e", "-h", f"{d}/hostkey",
                                  "-o", f"ListenAddress={cls.addr(i)}", "-o", "PermitRootLogin=prohibit-password",
                                  "-o", f"AuthorizedKeysFile={d}/authorized_keys", "-o", "StrictModes=no",
                                  "-o", "PidFile=none", "-o", "UsePAM=no", "-o", "MaxStartups=64"],
                                 stderr=subprocess.PIPE, text=True)
            cls.procs.append(p)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                line = p.stderr.readline()
                if "Server listening" in line or not line:
                    break
            assert "Server listening" in line, line
            if i != cls.REVERTS:
                s = subprocess.Popen(["ip", "netns", "exec", h, "python3", "-c", SERVER, f"{d}/cert.pem", f"{d}/key.pem"], stdout=subprocess.PIPE,
                                     text=True)
                cls.procs.append(s)
                assert s.stdout.readline().strip() == "ready"
        with open(f"{d}/policy.yaml", "w") as f:
            f.write(FLEET_POLICY)
        with open(f"{d}/bad.yaml", "w") as f:
            f.write("version: 1\nports:\n  imap: {state: closed, allow: [nobody]}\n")
        lines = ["[mail]"]
        for i, h in enumerate(cls.hosts):
            extra = ""
            if i == cls.BROKEN:
                extra = f" mailward_policy_src={d}/bad.yaml"
            if i == cls.REVERTS:
                extra = " mailward_require_services=true"
            lines.append(f"h{i} ansible_host={cls.addr(i)} mailward_policy_dest={d}/h{i}/etc/policy.yaml "
                         f"mailward_state_dir={d}/h{i}/state mailward_probe_from=h{(i + 1) % len(cls.GOOD)}{extra}")
        lines += ["[mail:vars]", "ansible_user=root", f"ansible_ssh_private_key_file={d}/id",
                  f"mailward_binary={os.path.abspath(MAILWARD)}", f"mailward_policy_src={d}/policy.yaml",
                  "mailward_confirm=30"]
        with open(f"{d}/inventory", "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(f"{d}/site.yml", "w") as f:
            f.write("- hosts: mail\n  gather_facts: false\n  roles:\n    - mailward.firewall.mailward\n")
        # The recommended configuration (README): pipelining, SSH multiplexing, no facts, forks.
        with open(f"{d}/ansible.cfg", "w") as f:
            f.write(f"""[defaults]
forks = 8
host_key_checking = False
interpreter_python = /usr/bin/python3
retry_files_enabled = False
stdout_callback = results_json
callback_plugins = {os.path.join(HERE, "ansible_callbacks")}
collections_path = {COLLECTIONS}
[ssh_connection]
pipelining = True
ssh_args = -o ControlMaster=auto -o ControlPersist=30s -o UserKnownHostsFile=/dev/null
control_path_dir = {d}/cp
""")

    @classmethod
    def tearDownClass(cls):
        cp = os.path.join(cls.d, "cp")
        if os.path.isdir(cp):
            for sock in os.listdir(cp):  # end the SSH masters this test's runs left
                run(["ssh", "-o", f"ControlPath={os.path.join(cp, sock)}", "-O", "exit", "x"], check=False)
        for p in cls.procs:
            p.kill()
            p.wait()
        for ns in cls.namespaces:
            run(["ip", "netns", "del", ns], check=False)
        cls.tmp.cleanup()

    def playbook(self, *args):
        env = dict(os.environ, ANSIBLE_CONFIG=f"{self.d}/ansible.cfg", ANSIBLE_NOCOLOR="1")
        t0 = time.monotonic()
        p = subprocess.run(["ip", "netns", "exec", self.ctl, "ansible-playbook", "-i", f"{self.d}/inventory",
                            f"{self.d}/site.yml", *args], capture_output=True, text=True, env=env, cwd=self.d)
        elapsed = time.monotonic() - t0
        print(f"\nansible-playbook {' '.join(args)}: {elapsed:.1f} s", file=sys.stderr)
        out = json.loads(p.stdout.strip().splitlines()[-1])
        return p.returncode, out["tasks"], elapsed

    def ruleset(self, i):
        return run(["ip", "netns", "exec", self.hosts[i], "nft", "list", "ruleset"]).stdout

    def task(self, tasks, host, name):
        found = [t["result"] for t in tasks if t["host"] == f"h{host}" and name in t["task"]]
        self.assertEqual(len(found), 1, (host, name, [(t["host"], t["task"]) for t in tasks]))
        return found[0]

    def connect(self, ns, dest, port):
        code = ("import socket\ns=socket.socket();s.settimeout(1.0)\n"
                f"try:\n  s.connect(({dest!r},{port}));print('open')\n"
                "except ConnectionRefusedError: print('closed')\nexcept socket.timeout: print('filtered')\n")
        return run(["ip", "netns", "exec", ns, "python3", "-c", code]).stdout.strip()

    def test_fleet(self):
        # Check mode on fresh hosts: nothing changes, no file is written.
        rc, tasks, _ = self.playbook("--check", "--diff")
        for i in self.GOOD:
            self.assertTrue(self.task(tasks, i, "apply the mailward policy")["changed"])
            self.assertEqual(self.ruleset(i), "", f"check mode changed h{i}")
            self.assertFalse(os.path.exists(f"{self.d}/h{i}/etc"), f"check mode wrote h{i}'s policy")
        # The first run.
        rc, tasks, first_s = self.playbook()
        self.assertEqual(rc, 2)  # h6 and h7 fail, by design
        for i in self.GOOD:
            r = self.task(tasks, i, "apply the mailward policy")
            self.assertTrue(r["changed"], (i, r))
            self.assertEqual(r["outcome"], "kept")
            self.assertEqual(self.task(tasks, i, "Probe the ports")["rc"], 0)  # from the neighbour
        broken = self.task(tasks, self.BROKEN, "apply the mailward policy")
        self.assertTrue(broken["failed"])
        self.assertRegex(broken["msg"], r"h6/etc/policy\.yaml:3:\d+: .*nobody")
        self.assertFalse(os.path.exists(f"{self.d}/h{self.BROKEN}/etc/policy.yaml"))
        self.assertEqual(self.ruleset(self.BROKEN), "")
        reverted = self.task(tasks, self.REVERTS, "apply the mailward policy")
        self.assertTrue(reverted["failed"])
        self.assertEqual(reverted["outcome"], "reverted")
        self.assertIn("993", reverted["msg"])
        self.assertNotIn("mailward:143:closed", self.ruleset(self.REVERTS))
        # The policy file is back as it was (absent), so the boot unit does not apply it either.
        self.assertFalse(os.path.exists(f"{self.d}/h{self.REVERTS}/etc/policy.yaml"))
        # Each good host's closed port: allowlisted from the controller, closed from a neighbour.
        for i in self.GOOD:
            self.assertEqual(self.connect(self.ctl, self.addr(i), 143), "open", i)
            self.assertEqual(self.connect(self.hosts[(i + 1) % len(self.GOOD)], self.addr(i), 143), "filtered", i)
            self.assertEqual(self.connect(self.hosts[(i + 1) % len(self.GOOD)], self.addr(i), 993), "open", i)
        # The second run changes nothing on the good hosts.
        rc, tasks, second_s = self.playbook()
        for i in self.GOOD:
            changed = [t["task"] for t in tasks if t["host"] == f"h{i}" and t["result"].get("changed")]
            self.assertEqual(changed, [], i)
        print(f"\nfleet of {self.N}: first run {first_s:.1f} s, second run {second_s:.1f} s", file=sys.stderr)
        self.assertLess(first_s, 20.0 * LOAD_FACTOR)


if __name__ == "__main__":
    unittest.main()
