"""Helpers for mailward's integration tests: throwaway network namespaces, the binary, and
real TCP peers. Nothing here touches the machine's own firewall: every netfilter change happens
inside a namespace a test made and removes."""
import json
import os
import random
import socket
import subprocess
import tempfile
import threading
import time
import unittest

MAILWARD = os.environ.get("MAILWARD_BIN", os.path.join(os.path.dirname(__file__), "../../build/mailward"))
HOST_V4, PLAIN_V4, ALLOWED_V4 = "198.51.100.1", "198.51.100.2", "198.51.100.3"
HOST_V6, PLAIN_V6, ALLOWED_V6 = "2001:db8::1", "2001:db8::2", "2001:db8::3"


def run(cmd, check=True, **kw):
    """Runs argv; returns CompletedProcess with text output."""
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


class Topology:
    """A host namespace and a client namespace joined by a veth pair (TESTING.md)."""

    def __init__(self):
        tag = f"{os.getpid() % 10000}{random.randint(0, 9999)}"
        self.host, self.client = f"mwh{tag}", f"mwc{tag}"
        run(["ip", "netns", "add", self.host])
        run(["ip", "netns", "add", self.client])
        for ns in (self.host, self.client):
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        h, c = f"vh{tag}", f"vc{tag}"
        run(["ip", "link", "add", h, "type", "veth", "peer", "name", c])
        run(["ip", "link", "set", h, "netns", self.host])
        run(["ip", "link", "set", c, "netns", self.client])
        run(["ip", "-n", self.host, "addr", "add", f"{HOST_V4}/24", "dev", h])
        run(["ip", "-n", self.host, "addr", "add", f"{HOST_V6}/64", "dev", h, "nodad"])
        for a in (PLAIN_V4, ALLOWED_V4):
            run(["ip", "-n", self.client, "addr", "add", f"{a}/24", "dev", c])
        for a in (PLAIN_V6, ALLOWED_V6):
            run(["ip", "-n", self.client, "addr", "add", f"{a}/64", "dev", c, "nodad"])
        run(["ip", "-n", self.host, "link", "set", h, "up"])
        run(["ip", "-n", self.client, "link", "set", c, "up"])
        self.servers = []

    def close(self):
        for s in self.servers:
            s.kill()
            s.wait()
            s.stdout.close()
        run(["ip", "netns", "del", self.host], check=False)
        run(["ip", "netns", "del", self.client], check=False)

    def in_host(self, argv, **kw):
        return run(["ip", "netns", "exec", self.host] + argv, **kw)

    def serve(self, ports):
        """Starts a TCP server in the host namespace answering on every port, v4 and v6."""
        code = (
            "import socket,select,sys\n"
            "ls=[]\n"
            f"for p in {list(ports)}:\n"
            "  s=socket.socket(socket.AF_INET6);s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
            "  s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0);s.bind(('::',p));s.listen(64);ls.append(s)\n"
            "print('ready',flush=True)\n"
            "while True:\n"
            "  r,_,_=select.select(ls,[],[])\n"
            "  for s in r:\n"
            "    c,_=s.accept();c.sendall(b'* OK hello\\r\\n');c.close()\n"
        )
        p = subprocess.Popen(["ip", "netns", "exec", self.host, "python3", "-c", code],
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        self.servers.append(p)

    def connect(self, dest, port, source, timeout=1.0):
        """From the client namespace: 'open' (greeting read), 'closed' (refused/reset) or
        'filtered' (no answer within timeout)."""
        code = (
            "import socket,sys\n"
            f"fam=socket.AF_INET6 if ':' in {dest!r} else socket.AF_INET\n"
            "s=socket.socket(fam);s.settimeout(" + repr(timeout) + ")\n"
            f"s.bind(({source!r},0))\n"
            "try:\n"
            f"  s.connect(({dest!r},{port}));d=s.recv(64);print('open' if d else 'closed')\n"
            "except ConnectionRefusedError: print('closed')\n"
            "except ConnectionResetError: print('closed')\n"
            "except socket.timeout: print('filtered')\n"
        )
        return run(["ip", "netns", "exec", self.client, "python3", "-c", code]).stdout.strip()


    def reach(self, ports=(110, 143, 993)):
        """{(port, source): state} from the plain and the allowlisted client address of each
        family, to the host address of that family."""
        return {(port, src): self.connect(dst, port, src)
                for port in ports
                for dst, srcs in ((HOST_V4, (PLAIN_V4, ALLOWED_V4)), (HOST_V6, (PLAIN_V6, ALLOWED_V6)))
                for src in srcs}


def assert_mail_policy_reachability(case, after):
    """What the shared scenario's policy (143 closed but for the allowlist, 993 open, 110
    closed with a reset) must look like from the client namespace, whatever the backend."""
    for src in (PLAIN_V4, PLAIN_V6):
        case.assertEqual(after[(143, src)], "filtered", src)   # dropped
        case.assertEqual(after[(110, src)], "closed", src)     # rejected with a reset
        case.assertEqual(after[(993, src)], "open", src)
    for src in (ALLOWED_V4, ALLOWED_V6):
        case.assertEqual(after[(143, src)], "open", src)
        case.assertEqual(after[(110, src)], "closed", src)     # no allowlist on 110
        case.assertEqual(after[(993, src)], "open", src)


class Sandbox:
    """A private network namespace kept alive by a sleeping process; commands enter it with
    nsenter. Cheaper than a Topology when no traffic is needed."""

    def __init__(self):
        self.proc = subprocess.Popen(["unshare", "-n", "sleep", "infinity"])
        self.pid = self.proc.pid
        for _ in range(100):
            if os.readlink(f"/proc/{self.pid}/ns/net") != os.readlink("/proc/self/ns/net"):
                break
            time.sleep(0.01)
        self.run(["ip", "link", "set", "lo", "up"])

    def run(self, argv, **kw):
        return run(["nsenter", "-t", str(self.pid), "-n"] + argv, **kw)

    def close(self):
        self.proc.kill()
        self.proc.wait()


def other_tables(runner):
    """{(family, name): listing} of every table but inet mailward."""
    out = runner(["nft", "list", "tables"]).stdout
    res = {}
    for line in out.splitlines():
        _, family, name = line.split()
        if (family, name) == ("inet", "mailward"):
            continue
        res[(family, name)] = runner(["nft", "list", "table", family, name]).stdout
    return res


class MailwardCase(unittest.TestCase):
    """Gives each test a temp dir with a state dir and a helper to write policies."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="mwtest")
        self.dir = self.tmp.name
        self.state = os.path.join(self.dir, "state")

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def mw(self, runner, *args, policy=None, check=False):
        argv = [MAILWARD, "--state-dir", self.state]
        if policy:
            argv += ["--policy", policy]
        return runner(argv + list(args), check=check)

    def mw_json(self, runner, *args, policy=None):
        p = self.mw(runner, "--format", "json", *args, policy=policy)
        return p.returncode, json.loads(p.stdout) if p.stdout.strip() else None
