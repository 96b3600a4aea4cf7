"""Helpers for mailward's integration tests: throwaway network namespaces, the binary, and
real TCP peers. Nothing here touches the machine's own firewall: every netfilter change happens
inside a namespace a test made and removes."""
import ctypes
import glob
import json
import os
import itertools
import random
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import unittest

MAILWARD = os.environ.get("MAILWARD_BIN", os.path.join(os.path.dirname(__file__), "../../build/mailward"))
# The test-only library (tests/hooks) preloaded into mailward for injected faults and pauses.
TEST_HOOKS = os.environ.get("MAILWARD_TEST_HOOKS") or os.path.join(
    os.path.dirname(os.path.abspath(MAILWARD)), "tests", "libmailward_test_hooks.so")


def fault_env(fault):
    """The environment that makes mailward inject `fault` (tests/hooks/test_hooks.cc)."""
    assert os.path.exists(TEST_HOOKS), f"{TEST_HOOKS}: build the test hooks (tests/hooks) first"
    return {**os.environ, "MAILWARD_TEST_FAULT": fault, "LD_PRELOAD": TEST_HOOKS}
HOST_V4, PLAIN_V4, ALLOWED_V4 = "198.51.100.1", "198.51.100.2", "198.51.100.3"
HOST_V6, PLAIN_V6, ALLOWED_V6 = "2001:db8::1", "2001:db8::2", "2001:db8::3"


def run(cmd, check=True, **kw):
    """Runs argv; returns CompletedProcess with text output."""
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


_TOPOLOGY_IDS = itertools.count()


class Topology:
    """A host namespace and a client namespace joined by a veth pair (TESTING.md)."""

    def __init__(self):
        # Unique within this process (tests may build several at once) and, by pid, across them.
        tag = f"{os.getpid() % 10000}{next(_TOPOLOGY_IDS)}{random.randint(0, 9)}"
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
        'filtered' (no answer within timeout). Once connected, the greeting may take up to 10 s
        (a loaded machine): timeout is for the handshake only."""
        code = (
            "import socket,sys\n"
            f"fam=socket.AF_INET6 if ':' in {dest!r} else socket.AF_INET\n"
            "s=socket.socket(fam);s.settimeout(" + repr(timeout) + ")\n"
            f"s.bind(({source!r},0))\n"
            "try:\n"
            f"  s.connect(({dest!r},{port}));s.settimeout(10);d=s.recv(64);print('open' if d else 'closed')\n"
            "except ConnectionRefusedError: print('closed')\n"
            "except ConnectionResetError: print('closed')\n"
            "except socket.timeout: print('filtered')\n"
            "except OSError: print('closed')\n"  # an ICMP reject (admin-prohibited: firewalld)
        )
        return run(["ip", "netns", "exec", self.client, "python3", "-c", code]).stdout.strip()

    def greeting(self, dest, port, source, timeout=1.0):
        """Like connect, but returns (state, first line read) so a test can tell who answered
        (a container's "* OK container 143" or the host's "* OK hello")."""
        code = (
            "import socket,sys\n"
            f"fam=socket.AF_INET6 if ':' in {dest!r} else socket.AF_INET\n"
            "s=socket.socket(fam);s.settimeout(" + repr(timeout) + ")\n"
            f"s.bind(({source!r},0))\n"
            "try:\n"
            f"  s.connect(({dest!r},{port}));s.settimeout(10);d=s.recv(128).decode(errors='replace').strip()\n"
            "  print('open' if d else 'closed');print(d)\n"
            "except (ConnectionRefusedError, ConnectionResetError): print('closed')\n"
            "except socket.timeout: print('filtered')\n"
            "except OSError: print('closed')\n"
        )
        out = run(["ip", "netns", "exec", self.client, "python3", "-c", code]).stdout.splitlines()
        return out[0], (out[1] if len(out) > 1 else "")


    def reach(self, ports=(110, 143, 993)):
        """{(port, source): state} from the plain and the allowlisted client address of each
        family, to the host address of that family."""
        return {(port, src): self.connect(dst, port, src)
                for port in ports
                for dst, srcs in ((HOST_V4, (PLAIN_V4, ALLOWED_V4)), (HOST_V6, (PLAIN_V6, ALLOWED_V6)))
                for src in srcs}


MAIL_POLICY = """\
version: 1
backend: {backend}
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
  pop3s:
    state: open
    rate_limit: 20/minute
"""


def mail_policy(backend):
    """The shared scenario's policy, which assert_mail_policy_reachability judges."""
    return MAIL_POLICY.format(backend=backend, allowed_v4=ALLOWED_V4, allowed_v6=ALLOWED_V6)


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


# ---------------------------------------------------------------------------------------------
# Real peers inside a Topology's host namespace (TESTING.md): dockerd, fail2ban, firewalld, UFW.
# Each runs in a private mount namespace (and, but for UFW, a PID namespace of its own) entered
# through the host's network namespace, after checking that namespace is really the Topology's.

class PeerDied(AssertionError):
    """A daemon under test exited: waiting longer is pointless."""


def wait_for(cond, timeout, what, interval=0.05):
    """Polls cond() until it returns a true value (returned); AssertionError naming `what` after
    timeout seconds, at once if cond raises PeerDied. The way to wait for a daemon: never a
    bare sleep."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            last = cond()
            if last:
                return last
        except PeerDied:
            raise
        except Exception as e:  # not up yet: its client fails; keep polling
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}: {last!r}")
        time.sleep(interval)


def _die_with_parent():
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


_HOLDER = (
    "import json,os,subprocess,sys,time\n"
    "for argv in json.loads(sys.argv[1]): subprocess.run(argv, check=True)\n"
    "print('ready', flush=True)\n"
    "while True:\n"                      # PID 1 of the namespace: reap every orphan
    "  try: os.wait()\n"
    "  except ChildProcessError: time.sleep(0.2)\n"
)


class PrivateNs:
    """A holder process in the Topology's host network namespace, with a private mount namespace
    (tmpfs on /run, the given bind mounts) and, with pid=True, a PID namespace whose PID 1 is the
    holder: killing it kills every daemon started inside, whatever they forked. run() and
    popen() enter all of these namespaces with nsenter, after checking the holder is alive and
    still in the Topology's network namespace (never the machine's)."""

    def __init__(self, topo, binds=(), pid=True, extra_setup=()):
        self.topo = topo
        self.pid_ns = pid
        netns = f"/run/netns/{topo.host}"
        wait_for(lambda: os.path.exists(netns), 5, f"{netns} to exist")
        self.netns_ino = os.stat(netns).st_ino
        if self.netns_ino == os.stat("/proc/self/ns/net").st_ino:
            raise AssertionError(f"{netns} is this process's own network namespace")
        setup = [["mount", "-t", "tmpfs", "-o", "mode=755", "mwtest-run", "/run"]]
        if not os.path.islink("/var/run"):
            setup.append(["mount", "-t", "tmpfs", "-o", "mode=755", "mwtest-varrun", "/var/run"])
        for src, dst in binds:
            setup.append(["mount", "--bind", src, dst])
        setup += [list(a) for a in extra_setup]
        argv = ["nsenter", f"--net={netns}", "unshare", "-m", "--propagation", "private"]
        if pid:
            argv += ["-p", "-f", "--mount-proc", "--kill-child=SIGKILL"]
        argv += ["/usr/bin/python3", "-c", _HOLDER, json.dumps(setup)]
        # If the test process dies without cleaning up (SIGKILL, a ctest timeout), the holder
        # dies with it, and with the holder everything in its PID namespace.
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
        self.procs = []
        try:
            line = self.proc.stdout.readline().strip()
            if line != "ready":
                raise AssertionError(f"namespace holder failed to start ({self.proc.wait()})")
            if pid:  # nsenter exec'd unshare, which forked the holder (PID 1 inside)
                self.pid = wait_for(lambda: self._child(self.proc.pid), 5, "the holder's pid")
            else:
                self.pid = self.proc.pid
            self._check()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _child(pid):
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = f.read().split()
        return int(kids[0]) if kids else None

    def _check(self):
        if self.proc.poll() is not None:
            raise AssertionError("the namespace holder is gone")
        if os.stat(f"/proc/{self.pid}/ns/net").st_ino != self.netns_ino:
            raise AssertionError(f"pid {self.pid} is not in {self.topo.host}'s network namespace")

    def argv(self, argv):
        self._check()
        return ["nsenter", "-t", str(self.pid), "-n", "-m"] + (["-p"] if self.pid_ns else []) + ["--"] + list(argv)

    def run(self, argv, **kw):
        return run(self.argv(argv), **kw)

    def popen(self, argv, log):
        """Starts a long-running process inside; its output goes to the file `log`."""
        with open(log, "ab") as out:
            p = subprocess.Popen(self.argv(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def close(self):
        """Kills the holder: with a PID namespace the kernel kills everything inside."""
        if self.proc.poll() is None:
            if self.pid_ns:
                try:
                    os.kill(self.pid, 9)
                except ProcessLookupError:
                    pass
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def docker_rules(save_text, own_chain="MAILWARD"):
    """iptables-save text without counters, comments, and mailward's own lines (its chain
    declarations, rules and jumps): what must stay byte-identical for Docker."""
    out = []
    for line in save_text.splitlines():
        if line.startswith("#"):
            continue
        if line.startswith(":"):
            if line[1:].split()[0] == own_chain:
                continue
            line = line.rsplit(" [", 1)[0]
        if line.startswith(f"-A {own_chain} ") or line.endswith(f"-j {own_chain}"):
            continue
        out.append(line)
    return "\n".join(out)


def have_docker():
    return shutil.which("dockerd") is not None and os.path.exists(DOCKER) and os.path.exists("/bin/busybox")


def read_log(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-4000:]
    except OSError:
        return ""


DOCKER = "/usr/bin/docker"  # Debian's docker.io client (a newer one may sit in /usr/local/bin)
BUSYBOX_IMAGE = "mwbusy:1"


class Dockerd:
    """Debian's dockerd inside the Topology's host namespace (TESTING.md): a private mount and PID
    namespace with tmpfs /run (so /run/docker.sock, /run/docker and its containerd are private),
    a private /etc/docker, its own data root (vfs storage) and a cgroup parent under the test's
    own cgroup. Its iptables rules (iptables-nft: Debian's default) land in the host namespace
    only. The image is busybox-static imported from a tarball (no registry is reachable).
    iptables_variant="legacy" puts iptables-legacy first on dockerd's PATH (Docker writes the
    legacy tables); ipv6_cidr (a TEST-NET prefix) gives the default bridge IPv6, so ports are
    published over IPv6 by DNAT too (ip6tables), not by docker-proxy."""

    def __init__(self, topo, tmpdir, iptables_variant=None, ipv6_cidr=None):
        self.topo, self.dir = topo, os.path.join(tmpdir, "dockerd")
        for sub in ("root", "etc", "img/bin", "bin"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        self.log = os.path.join(self.dir, "dockerd.log")
        self.cgroup_parent = f"mwtest-{topo.host}"
        self.containers = []
        self.save_tool = "iptables-save"
        env = []
        if iptables_variant == "legacy":
            for tool in ("iptables", "ip6tables", "iptables-save", "ip6tables-save", "iptables-restore",
                         "ip6tables-restore"):
                os.symlink(shutil.which(tool.replace("tables", "tables-legacy", 1)), os.path.join(self.dir, "bin", tool))
            env = ["env", "PATH=" + os.path.join(self.dir, "bin") + ":" + os.environ.get("PATH", "/usr/sbin:/usr/bin")]
            self.save_tool = "iptables-legacy-save"
        v6 = ["--experimental", "--ipv6", "--ip6tables", "--fixed-cidr-v6", ipv6_cidr] if ipv6_cidr else []
        self.ns = PrivateNs(topo, binds=[(os.path.join(self.dir, "etc"), "/etc/docker")])
        try:
            self.iptables = self.ns.run(env + ["iptables", "--version"]).stdout.strip()
            self.proc = self.ns.popen(env + ["dockerd", "--data-root", os.path.join(self.dir, "root"),
                                             "--storage-driver", "vfs", "--cgroup-parent", self.cgroup_parent,
                                             "-H", "unix:///run/docker.sock"] + v6, self.log)
            wait_for(self._up, 60, "dockerd to answer `docker info`")
            self._import_image()
        except BaseException:
            self.close()
            raise

    def _up(self):
        if self.proc.poll() is not None:
            raise PeerDied(f"dockerd exited {self.proc.returncode}:\n{read_log(self.log)}")
        return self.docker(["info", "--format", "{{.ServerVersion}}"], check=False).returncode == 0

    def docker(self, args, **kw):
        return self.ns.run([DOCKER] + list(args), **kw)

    def _import_image(self):
        img = os.path.join(self.dir, "img")
        shutil.copy("/bin/busybox", os.path.join(img, "bin", "busybox"))
        for a in ("sh", "nc", "echo"):
            os.symlink("busybox", os.path.join(img, "bin", a))
        tar = os.path.join(self.dir, "busybox.tar")
        with tarfile.open(tar, "w") as t:
            t.add(img, arcname=".")
        self.docker(["import", tar, BUSYBOX_IMAGE])

    def publish(self, host_port, container_port=None, wait_from=PLAIN_V4):
        """Runs a container answering "* OK container PORT" on container_port (default the same)
        published as host_port (`-p host_port:container_port`). Returns when the container
        answers from the host namespace and, unless wait_from is None, when the client
        namespace reaches it through the host's address from that source."""
        cport = container_port or host_port
        serve = f'echo "* OK container {cport}"'
        cid = self.docker(["run", "-d", "-p", f"{host_port}:{cport}", BUSYBOX_IMAGE,
                           "nc", "-ll", "-p", str(cport), "-e", "sh", "-c", serve]).stdout.strip()
        self.containers.append(cid)
        nat = self.ns.run([self.save_tool, "-t", "nat"]).stdout
        if not re.search(rf"--dport {host_port} -j DNAT --to-destination [0-9.]+:{cport}\b", nat):
            raise AssertionError(f"no DNAT for {host_port} in {self.topo.host}'s nat table:\n{nat}")
        ip = self.docker(["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", cid]).stdout.strip()
        probe = ("import socket,sys\n"
                 "try:\n"
                 f"  s=socket.create_connection(({ip!r},{cport}),timeout=1);print(s.recv(64).decode())\n"
                 "except OSError: pass\n")
        wait_for(lambda: "container" in self.ns.run(["/usr/bin/python3", "-c", probe]).stdout, 30,
                 f"container {cid[:12]} to answer on {ip}:{cport}")
        if wait_from:
            dest = HOST_V6 if ":" in wait_from else HOST_V4
            wait_for(lambda: "container" in self.topo.greeting(dest, host_port, wait_from)[1], 30,
                     f"{dest}:{host_port} to reach the container from {wait_from}")
        return ip

    def serve(self, ports, greeting="container"):
        """One container answering "* OK <greeting>" on each of `ports`, published on the same
        host ports (IPv4, and IPv6 with ipv6_cidr). Returns (container id, its IPv4 address) once
        every port answers inside the container's network."""
        loops = " & ".join(f"nc -ll -p {p} -e echo '* OK {greeting}'" for p in ports)
        args = ["run", "-d"]
        for p in ports:
            args += ["-p", f"{p}:{p}"]
        cid = self.docker(args + [BUSYBOX_IMAGE, "sh", "-c", loops + " & wait"]).stdout.strip()
        self.containers.append(cid)
        ip = self.docker(["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", cid]).stdout.strip()
        probe = ("import socket,sys\n"
                 "for p in sys.argv[2:]:\n"
                 "  s=socket.create_connection((sys.argv[1],int(p)),timeout=1)\n"
                 "  assert s.recv(64)\n"
                 "print('ok')\n")
        wait_for(lambda: "ok" in self.ns.run(["/usr/bin/python3", "-c", probe, ip] + [str(p) for p in ports],
                                             check=False).stdout,
                 30, f"container {cid[:12]} to answer on {ip}:{ports}")
        return cid, ip

    def remove(self, cid):
        self.docker(["rm", "-f", cid], timeout=60)
        if cid in self.containers:
            self.containers.remove(cid)

    def remove_containers(self):
        if self.containers:
            self.docker(["rm", "-f"] + self.containers, check=False, timeout=60)
        self.containers = []

    def iptables_save(self):
        """iptables-save of nat and filter, v4 and v6, without the dated comment lines and with
        the chains' policy counters zeroed: what must stay byte-identical for Docker."""
        out = []
        for cmd in ("iptables-save", "ip6tables-save"):
            for table in ("nat", "filter"):
                text = self.ns.run([cmd, "-t", table]).stdout
                out += [f"{cmd} " + re.sub(r" \[\d+:\d+\]$", " [0:0]", l)
                        for l in text.splitlines() if not l.startswith("#")]
        return out

    @staticmethod
    def own_lines(save):
        """Docker's own lines of an iptables_save(): its chains, the jumps to them, the rules on
        docker0 and the masquerade of its subnet (mailward's lines left out)."""
        return [l for l in save if re.search(r"DOCKER|docker0|172\.17\.", l) and "mailward" not in l.lower()]

    def close(self):
        try:
            if getattr(self, "proc", None) is not None and self.proc.poll() is None:
                self.remove_containers()
        except Exception:
            pass
        self.ns.close()
        # Cgroups of containers docker could not remove (empty after the kill): remove them.
        for ctrl in glob.glob("/sys/fs/cgroup/*"):
            for d in sorted(glob.glob(f"{ctrl}/**/{self.cgroup_parent}", recursive=True), reverse=True):
                for sub in sorted(glob.glob(f"{d}/**/", recursive=True), key=len, reverse=True):
                    try:
                        os.rmdir(sub)
                    except OSError:
                        pass


DOVECOT_FAIL = ("{date} mail dovecot: imap-login: Disconnected (auth failed, 1 attempts in 2 secs): "
                "user=<bob>, method=PLAIN, rip={addr}, lip={lip}, TLS, session=<{session}>\n")


class Fail2ban:
    """The real fail2ban-server in the Topology's host namespace (private mounts and PID
    namespace, a private /etc/fail2ban copy): one jail, dovecot, on ports 110,143,993,995 with
    banaction nftables-multiport or iptables-multiport, reading a log file the test writes.
    start_on_demand=False makes the jail create its chain and (empty) set at start, as a ban
    and unban leave them; True is fail2ban's default (nothing until the first ban)."""

    JAIL = """\
[DEFAULT]
backend = polling
[sshd]
enabled = false
[dovecot]
enabled = true
filter = dovecot
port = 110,143,993,995
logpath = {log}
maxretry = 1
findtime = 3600
bantime = 3600
banaction = {banaction}
banaction_allports = {banaction}
action = %(banaction)s[port="%(port)s", protocol="%(protocol)s", chain="%(chain)s"{ondemand}]
"""

    def __init__(self, topo, tmpdir, banaction, start_on_demand=False):
        self.topo, self.banaction = topo, banaction
        self.dir = os.path.join(tmpdir, "fail2ban")
        os.makedirs(self.dir)
        etc = os.path.join(self.dir, "etc")
        shutil.copytree("/etc/fail2ban", etc, symlinks=True)
        for f in glob.glob(os.path.join(etc, "jail.d", "*")):
            os.remove(f)
        self.logpath = os.path.join(self.dir, "dovecot.log")
        open(self.logpath, "w").close()
        self.serverlog = os.path.join(self.dir, "fail2ban.log")
        with open(os.path.join(etc, "fail2ban.local"), "w") as f:
            f.write(f"[Definition]\nlogtarget = {self.serverlog}\ndbfile = {self.dir}/fail2ban.sqlite3\n")
        with open(os.path.join(etc, "jail.d", "mwtest.local"), "w") as f:
            f.write(self.JAIL.format(log=self.logpath, banaction=banaction,
                                     ondemand="" if start_on_demand else ", actionstart_on_demand=false"))
        self.ns = PrivateNs(topo, binds=[(etc, "/etc/fail2ban")],
                            extra_setup=[["mkdir", "-p", "/run/fail2ban"]])
        try:
            self.proc = self.ns.popen(["fail2ban-server", "-xf", "start"], os.path.join(self.dir, "server.out"))
            wait_for(self._up, 60, "fail2ban's dovecot jail")
            if not start_on_demand:
                wait_for(self.chain_present, 30, f"{banaction}'s rule")
        except BaseException:
            self.close()
            raise

    def _up(self):
        if self.proc.poll() is not None:
            raise PeerDied(f"fail2ban-server exited {self.proc.returncode}:\n{read_log(self.serverlog)}")
        return self.client(["status", "dovecot"], check=False).returncode == 0

    def client(self, args, **kw):
        return self.ns.run(["fail2ban-client"] + list(args), **kw)

    def run(self, argv, **kw):
        return self.ns.run(argv, **kw)

    def ruleset(self):
        """What fail2ban put in the kernel: the nft ruleset, or iptables -S of v4 and v6."""
        if self.banaction.startswith("nftables"):
            return self.ns.run(["nft", "list", "ruleset"]).stdout
        return self.ns.run(["iptables-save"]).stdout + self.ns.run(["ip6tables-save"]).stdout

    def chain_present(self):
        """The jail's rule is in the kernel (fail2ban's actionstart runs one command after the
        other: the table alone is not enough)."""
        text = self.ruleset()
        if self.banaction.startswith("nftables"):
            return re.search(r"ip saddr @addr-set-dovecot reject", text) is not None
        return "-j f2b-dovecot" in text and "-A f2b-dovecot -j RETURN" in text

    def banned(self):
        return self.client(["get", "dovecot", "banned"]).stdout

    def _visible(self, addr):
        text = self.ruleset()
        return addr in text and addr in self.banned()

    def ban(self, addr, how="log"):
        """Bans addr: how="log" appends a real Dovecot 2.3 auth-failure line to the jail's log
        (maxretry 1), how="client" runs `fail2ban-client set dovecot banip`. Returns once addr
        is in the jail's ban list and in the kernel's ruleset."""
        if how == "log":
            lip = HOST_V6 if ":" in addr else HOST_V4
            with open(self.logpath, "a") as f:
                f.write(DOVECOT_FAIL.format(date=time.strftime("%b %e %H:%M:%S"), addr=addr, lip=lip,
                                            session=random.randint(0, 1 << 30)))
        else:
            self.client(["set", "dovecot", "banip", addr])
        wait_for(lambda: self._visible(addr), 60, f"{addr} banned in the ruleset")

    def unban(self, addr):
        self.client(["set", "dovecot", "unbanip", addr])
        wait_for(lambda: addr not in self.ruleset(), 30, f"{addr} unbanned")

    def close(self):
        self.ns.close()


class Firewalld:
    """The real firewalld (nftables FirewallBackend, default zone public) in the Topology's host
    namespace, with a private system D-Bus, private mounts and PID namespace and a private copy
    of /etc/firewalld."""

    def __init__(self, topo, tmpdir):
        self.topo = topo
        self.dir = os.path.join(tmpdir, "firewalld")
        os.makedirs(self.dir)
        etc = os.path.join(self.dir, "etc")
        shutil.copytree("/etc/firewalld", etc, symlinks=True)
        conf = os.path.join(etc, "firewalld.conf")
        with open(conf) as f:
            text = f.read()
        text = re.sub(r"(?m)^FirewallBackend=.*$", "FirewallBackend=nftables", text)
        text = re.sub(r"(?m)^DefaultZone=.*$", "DefaultZone=public", text)
        with open(conf, "w") as f:
            f.write(text)
        self.log = os.path.join(self.dir, "firewalld.log")
        varlib = os.path.join(self.dir, "varlib")
        os.makedirs(varlib)
        binds = [(etc, "/etc/firewalld")]
        if os.path.isdir("/var/lib/firewalld"):
            binds.append((varlib, "/var/lib/firewalld"))
        self.ns = PrivateNs(topo, binds=binds, extra_setup=[["mkdir", "-p", "/run/dbus"]])
        try:
            self.ns.run(["dbus-daemon", "--system", "--fork"])
            self.proc = self.ns.popen(["firewalld", "--nofork", "--nopid", "--log-target", "file",
                                       "--log-file", self.log], os.path.join(self.dir, "firewalld.out"))
            wait_for(self._up, 90, "firewall-cmd --state to say running")
        except BaseException:
            self.close()
            raise

    def _up(self):
        if self.proc.poll() is not None:
            raise PeerDied(f"firewalld exited {self.proc.returncode}:\n{read_log(self.log)}")
        p = self.cmd(["--state"], check=False)
        return p.returncode == 0 and p.stdout.strip() == "running"

    def cmd(self, args, **kw):
        return self.ns.run(["firewall-cmd"] + list(args), **kw)

    def run(self, argv, **kw):
        return self.ns.run(argv, **kw)

    def add_service(self, service, zone="public"):
        """Allows service in zone, runtime and permanent (as an admin would)."""
        self.cmd([f"--zone={zone}", f"--add-service={service}"])
        self.cmd(["--permanent", f"--zone={zone}", f"--add-service={service}"])
        wait_for(lambda: service in self.cmd([f"--zone={zone}", "--list-services"]).stdout.split(), 30,
                 f"{service} listed in zone {zone}")

    def close(self):
        self.ns.close()


class Ufw:
    """UFW in the Topology's host namespace with private copies of /etc/ufw and /etc/default/ufw
    (bind mounts in a mount namespace made per command: TESTING.md). state: "enabled"
    (`ufw --force enable`), "disabled" (enabled, then `ufw disable`) or "pristine" (never
    enabled: Debian's shipped user.rules/user6.rules/ufw.conf from /usr/share/ufw). With ns (a
    PrivateNs, such as a Dockerd's), commands run inside that namespace instead."""

    def __init__(self, topo, tmpdir, state="enabled", ns=None):
        self.topo, self.ns = topo, ns
        self.etc = os.path.join(tmpdir, "etc-ufw")
        self.default = os.path.join(tmpdir, "default-ufw")
        shutil.copytree("/etc/ufw", self.etc, symlinks=True)
        shutil.copy2("/etc/default/ufw", self.default)
        if state == "pristine":
            for name in ("user.rules", "user6.rules", "ufw.conf"):
                shutil.copy2(os.path.join("/usr/share/ufw", name), os.path.join(self.etc, name))
        if state in ("enabled", "disabled"):
            self.run(["ufw", "--force", "enable"])
        if state == "disabled":
            self.run(["ufw", "disable"])

    def run(self, argv, **kw):
        script = 'mount --bind "$1" /etc/ufw && mount --bind "$2" /etc/default/ufw && shift 2 && exec "$@"'
        inner = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", self.etc, self.default]
        if self.ns is not None:
            return self.ns.run(inner + list(argv), **kw)
        # A PID namespace with its own /proc too: mailward's process checks must not see the
        # firewalld or fail2ban of another test running on this machine.
        inner[1:1] = ["-p", "-f", "--mount-proc"]
        netns = f"/run/netns/{self.topo.host}"
        if not os.path.exists(netns):
            raise AssertionError(f"{netns} is gone")
        return run(inner + ["ip", "netns", "exec", self.topo.host] + list(argv), **kw)

    def file(self, name):
        with open(os.path.join(self.etc, name)) as f:
            return f.read()

    def enabled(self):
        return re.search(r"(?m)^ENABLED=yes", self.file("ufw.conf")) is not None
