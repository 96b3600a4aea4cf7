"""Probes against a real Dovecot in a namespace, from a client namespace, before and after an
apply that closes 143 and 110; and against servers that misbehave."""
import imaplib
import json
import os
import ssl
import subprocess
import tempfile
import textwrap
import time
import unittest

from mwtest import ALLOWED_V4, HOST_V4, MAILWARD, PLAIN_V4, MailwardCase, Sandbox, Topology, run

POLICY = f"""\
version: 1
allowlists:
  office: [{ALLOWED_V4}]
ports:
  imap: {{state: closed, allow: [office]}}
  pop3: {{state: closed, allow: [office], action: reject}}
  imaps: {{state: open}}
  pop3s: {{state: open}}
"""


def expired_certificate(d, hours_ago):
    """A self-signed certificate that expired `hours_ago` hours ago (python's cryptography)."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=3))
            .not_valid_after(now - datetime.timedelta(hours=hours_ago)).sign(key, hashes.SHA256()))
    with open(f"{d}/key.pem", "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    with open(f"{d}/cert.pem", "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def start_dovecot(ns, d, ssl="yes", disable_plaintext_auth="yes", auth_mechanisms="plain", expired=False, extra=""):
    os.makedirs(f"{d}/run")
    os.makedirs(f"{d}/state")
    os.makedirs(f"{d}/mail")
    if expired:
        expired_certificate(d, 6)
    else:
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{d}/key.pem", "-out",
             f"{d}/cert.pem", "-days", "2", "-subj", "/CN=mail.test"])
    with open(f"{d}/dovecot.conf", "w") as f:
        f.write(textwrap.dedent(f"""\
            base_dir = {d}/run
            state_dir = {d}/state
            protocols = imap pop3
            listen = *, ::
            ssl = {ssl}
            ssl_cert = <{d}/cert.pem
            ssl_key = <{d}/key.pem
            disable_plaintext_auth = {disable_plaintext_auth}
            auth_mechanisms = {auth_mechanisms}
            passdb {{
              driver = static
              args = password=secret
            }}
            userdb {{
              driver = static
              args = uid=nobody gid=nogroup home={d}/mail/%u
            }}
            mail_location = maildir:{d}/mail/%u
            log_path = {d}/dovecot.log
            """) + extra)
    os.chmod(d, 0o755)
    # Dovecot daemonises: its children must not hold our pipes open.
    subprocess.run(["ip", "netns", "exec", ns, "dovecot", "-c", f"{d}/dovecot.conf"], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):  # wait until it listens
        out = run(["ip", "netns", "exec", ns, "ss", "-ltn"]).stdout
        if all(f":{p} " in out for p in (110, 143, 993, 995)):
            return
        time.sleep(0.1)
    raise AssertionError("dovecot did not start:\n" + open(f"{d}/dovecot.log").read())


class RealDovecot(MailwardCase):
    @classmethod
    def setUpClass(cls):
        cls.topo = Topology()
        cls.dtmp = tempfile.mkdtemp(prefix="mwdovecot")
        try:
            start_dovecot(cls.topo.host, cls.dtmp)
        except Exception:
            cls.topo.close()
            raise

    @classmethod
    def tearDownClass(cls):
        subprocess.run(["ip", "netns", "exec", cls.topo.host, "doveadm", "-c", f"{cls.dtmp}/dovecot.conf", "stop"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["pkill", "-f", f"dovecot -c {cls.dtmp}/"])
        cls.topo.close()
        subprocess.run(["rm", "-rf", cls.dtmp])

    def probe(self, policy, *extra, ns=None):
        ns = ns or self.topo.client
        # A generous step timeout: Dovecot spawns its login processes on demand, and CI machines
        # are busy. Filtered ports cost the timeout once, concurrently.
        p = run(["ip", "netns", "exec", ns, MAILWARD, "--policy", policy, "--format", "json", "probe", HOST_V4,
                 "--timeout", "4", "--deadline", "20", *extra], check=False)
        j = json.loads(p.stdout)
        return p.returncode, {r["port"]: r for r in j["results"]}

    def test_before_and_after_apply(self):
        policy = self.write("policy.yaml", POLICY)
        rc, before = self.probe(policy, "--source", PLAIN_V4)
        self.assertEqual(rc, 2)  # 143 and 110 answer while the policy says closed
        imap, imaps, pop3, pop3s = before[143], before[993], before[110], before[995]
        self.assertEqual(imap["state"], "open")
        self.assertTrue(imap["starttls"])
        self.assertTrue(imap["login_disabled"])
        self.assertFalse(imap["cleartext_login"])
        self.assertEqual(imap["tls"]["version"], "TLSv1.3")  # after the STARTTLS upgrade
        self.assertEqual(imaps["state"], "open")
        self.assertEqual(imaps["tls"]["version"], "TLSv1.3")
        self.assertIn("CN = mail.test", imaps["tls"]["subject"].replace("/CN=", "CN = "))
        self.assertIn(imaps["tls"]["days_left"], (1, 2))
        self.assertTrue(imaps["greeting"].startswith("* OK"))
        self.assertEqual(pop3["state"], "open")
        self.assertTrue(pop3["starttls"])
        self.assertEqual(pop3["tls"]["version"], "TLSv1.3")
        self.assertEqual(pop3s["state"], "open")
        self.assertFalse(imap["as_policy"])
        self.assertTrue(imaps["as_policy"])

        apply = run(["ip", "netns", "exec", self.topo.host, MAILWARD, "--policy", policy, "--state-dir", self.state,
                     "--format", "json", "apply"], check=False)
        self.assertEqual(apply.returncode, 0, apply.stderr)
        rc, after = self.probe(policy, "--source", PLAIN_V4)
        self.assertEqual(rc, 0, after)
        self.assertEqual(after[143]["state"], "filtered")
        self.assertEqual(after[110]["state"], "closed")  # reject: a TCP reset
        self.assertEqual(after[993]["state"], "open")
        self.assertEqual(after[995]["state"], "open")
        rc, allowed = self.probe(policy, "--source", ALLOWED_V4)
        self.assertEqual(rc, 0)
        self.assertEqual((allowed[143]["state"], allowed[143]["expected"]), ("open", "open"))
        self.assertEqual(allowed[110]["state"], "open")
        # A real client still logs in over 993.
        code = (f"import imaplib,ssl\nc=ssl.create_default_context();c.check_hostname=False;c.verify_mode=ssl.CERT_NONE\n"
                f"m=imaplib.IMAP4_SSL('{HOST_V4}',993,ssl_context=c,timeout=5)\nprint(m.login('alice','secret')[0]);m.logout()")
        out = run(["ip", "netns", "exec", self.topo.client, "python3", "-c", code]).stdout.strip()
        self.assertEqual(out, "OK")
        # A probe from the host itself crosses loopback: closed ports cannot be judged there.
        p = run(["ip", "netns", "exec", self.topo.host, MAILWARD, "--policy", policy, "--format", "json", "probe",
                 "--timeout", "4"], check=False)
        self.assertEqual(p.returncode, 0, p.stdout)
        local = json.loads(p.stdout)["results"]
        self.assertTrue(all(r["as_policy"] is None for r in local if r["expected"] == "closed"))
        self.assertTrue(any("loopback" in r["reason"] for r in local))
        # apply's own verification probed the open ports locally.
        self.assertTrue(all(r["state"] == "open" for r in json.loads(apply.stdout)["probes"]))


def stop_dovecot(ns, d):
    """doveadm stop, then waits until the master (its pid from our own base_dir) is gone."""
    pidfile = f"{d}/run/master.pid"
    pid = None
    if os.path.exists(pidfile):
        with open(pidfile) as f:
            pid = int(f.read().split()[0])
    subprocess.run(["ip", "netns", "exec", ns, "doveadm", "-c", f"{d}/dovecot.conf", "stop"],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        if pid is None or not os.path.exists(f"/proc/{pid}"):
            return
        time.sleep(0.05)
    os.kill(pid, 9)


CLIENT_POP3 = r"""
import poplib, sys
p = poplib.POP3(sys.argv[1], 110, timeout=5)
caps = p.capa()
try:
    print("USER", p.user("mailward-probe").decode())
except poplib.error_proto as e:
    print("USER", e.args[0].decode())
print("SASL", " ".join(caps.get("SASL", [])))
p.quit()
"""
CLIENT_IMAP = r"""
import imaplib, sys
m = imaplib.IMAP4(sys.argv[1], 143, timeout=5)
print(" ".join(m.capabilities))
m.logout()
"""


class ProbeVerdicts(MailwardCase):
    """Probe verdicts against a real Dovecot per configuration, each cross-checked with poplib,
    imaplib or openssl s_client from the same client namespace (a network client: not loopback)."""

    @classmethod
    def setUpClass(cls):
        cls.topo = Topology()

    @classmethod
    def tearDownClass(cls):
        cls.topo.close()

    def dovecot(self, **conf):
        d = tempfile.mkdtemp(prefix="mwdovecot")
        self.dirs = getattr(self, "dirs", []) + [d]
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", d]))
        start_dovecot(self.topo.host, d, **conf)
        self.addCleanup(stop_dovecot, self.topo.host, d)

    def probe(self, policy_text):
        policy = self.write("p.yaml", policy_text)
        p = run(["ip", "netns", "exec", self.topo.client, MAILWARD, "--policy", policy, "--format", "json", "probe",
                 HOST_V4, "--timeout", "4", "--deadline", "20"], check=False)
        return p.returncode, {r["port"]: r for r in json.loads(p.stdout)["results"]}

    def client(self, code):
        return run(["ip", "netns", "exec", self.topo.client, "python3", "-c", code, HOST_V4]).stdout

    OPEN = "version: 1\nports:\n  imap: {state: open}\n  pop3: {state: open}\n"

    def test_ssl_required_refuses_user_before_tls(self):
        self.dovecot(ssl="required", disable_plaintext_auth="no")
        rc, r = self.probe(self.OPEN)
        self.assertEqual(rc, 0, r)
        self.assertFalse(r[110]["cleartext_login"], r[110])
        self.assertIn("USER refused before TLS", r[110]["cleartext_evidence"])
        self.assertFalse(r[143]["cleartext_login"], r[143])
        self.assertTrue(r[110]["as_policy"] and r[143]["as_policy"])
        out = self.client(CLIENT_POP3)
        self.assertIn("USER -ERR [AUTH] Plaintext authentication disallowed", out)
        self.assertIn("LOGINDISABLED", self.client(CLIENT_IMAP))

    def test_cleartext_allowed_is_seen_like_a_client_sees_it(self):
        self.dovecot(ssl="yes", disable_plaintext_auth="no")
        rc, r = self.probe(self.OPEN)
        self.assertEqual(rc, 2)
        self.assertTrue(r[110]["cleartext_login"])
        self.assertIn("USER accepted before TLS", r[110]["cleartext_evidence"])
        self.assertFalse(r[110]["as_policy"])
        self.assertEqual(r[110]["tls"]["version"], "TLSv1.3")  # STLS still works after the USER check
        self.assertTrue(r[143]["cleartext_login"])
        self.assertFalse(r[143]["as_policy"])
        self.assertIn("USER +OK", self.client(CLIENT_POP3))
        self.assertNotIn("LOGINDISABLED", self.client(CLIENT_IMAP))

    def test_pop3_block_weakening_global_required_audit_and_probe_agree(self):
        """ssl = required globally, protocol pop3 { ssl = yes }, disable_plaintext_auth = no: POP3
        logs users in over cleartext. The audit reports it for protocol=pop3, the probe sees it, a
        real client does it."""
        self.dovecot(ssl="required", disable_plaintext_auth="no", extra="protocol pop3 {\n  ssl = yes\n}\n")
        conf = [os.path.join(d, "dovecot.conf") for d in self.dirs][-1]
        a = run([MAILWARD, "--policy", "/nonexistent", "--format", "json", "audit", "dovecot", "--config", conf],
                check=False)
        findings = {(f["id"], tuple(f["contexts"])) for f in json.loads(a.stdout)["findings"]}
        self.assertIn(("cleartext-auth", ("protocol=pop3",)), findings)
        self.assertIn(("plaintext-listener", ("listener pop3-login/pop3",)), findings)
        self.assertFalse(any(c == ("protocol=imap",) for _, c in findings), findings)
        rc, r = self.probe(self.OPEN)
        self.assertTrue(r[110]["cleartext_login"])
        self.assertFalse(r[110]["as_policy"])
        self.assertFalse(r[143]["cleartext_login"])
        code = ("import poplib,sys\np=poplib.POP3(sys.argv[1],110,timeout=5)\np.user('alice')\n"
                "print(p.pass_('secret').decode(), flush=True);p.close()")
        self.assertIn("+OK", self.client(code))  # a real login, password in cleartext

    def test_cram_md5_alone_is_not_cleartext(self):
        self.dovecot(ssl="yes", disable_plaintext_auth="yes", auth_mechanisms="plain cram-md5")
        rc, r = self.probe(self.OPEN)
        self.assertEqual(rc, 0, r)
        self.assertEqual(r[110]["auth_cleartext"], ["CRAM-MD5"])
        self.assertFalse(r[110]["cleartext_login"], r[110])
        self.assertTrue(r[110]["as_policy"])
        out = self.client(CLIENT_POP3)
        self.assertIn("SASL CRAM-MD5", out)
        self.assertIn("USER -ERR [AUTH]", out)

    def test_expired_certificate(self):
        self.dovecot(expired=True)
        rc, r = self.probe("version: 1\nports:\n  imaps: {state: open}\n")
        self.assertEqual(rc, 2)
        self.assertEqual(r[993]["tls"]["days_left"], -1)  # six hours ago
        self.assertFalse(r[993]["as_policy"])
        self.assertIn("expired", r[993]["reason"])
        # openssl agrees: the served certificate's end date has passed.
        sc = run(["ip", "netns", "exec", self.topo.client, "openssl", "s_client", "-connect", f"{HOST_V4}:993"],
                 input="", check=False).stdout
        pem = sc[sc.index("-----BEGIN CERTIFICATE-----"):sc.index("-----END CERTIFICATE-----") + 25]
        self.assertEqual(run(["openssl", "x509", "-noout", "-checkend", "0"], input=pem, check=False).returncode, 1)
        # A policy floor in days judges a valid certificate too.
        rc, r = self.probe("version: 1\ntls: {min_days_left: 0}\nports:\n  imaps: {state: open, tls: {min_version: TLSv1.3}}\n")
        self.assertEqual(r[993]["as_policy"], False)


MISBEHAVING = r"""
import socket, struct, threading, time, sys
def serve(port, handler):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port)); s.listen(8)
    def loop():
        while True:
            c, _ = s.accept()
            threading.Thread(target=handler, args=(c,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()
def silent(c): time.sleep(60)
def huge(c):
    try:
        chunk = b"+OK " + b"x" * 65536
        for _ in range(1600): c.sendall(chunk)   # 100 MB, no newline
    except OSError: pass
def reset(c):
    c.sendall(b"* OK hel")
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); c.close()
serve(143, silent)     # a greeting that never comes
serve(110, huge)       # a 100 MB greeting
serve(993, silent)     # a TLS handshake that stalls
serve(995, reset)      # a reset mid-line (995 expects TLS: the handshake meets the reset)
serve(587, reset)      # SMTP: reset mid-greeting
print("ready", flush=True)
time.sleep(120)
"""


class Misbehaving(MailwardCase):
    def test_each_ends_in_a_clear_result_within_the_timeout(self):
        ns = Sandbox()
        self.addCleanup(ns.close)
        srv = subprocess.Popen(["nsenter", "-t", str(ns.pid), "-n", "python3", "-c", MISBEHAVING],
                               stdout=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (srv.kill(), srv.wait(), srv.stdout.close()))
        self.assertEqual(srv.stdout.readline().strip(), "ready")
        policy = self.write("p.yaml", "version: 1\nports:\n" + "".join(
            f"  {n}: {{state: open}}\n" for n in ("imap", "pop3", "imaps", "pop3s", "submission")))
        t = time.monotonic()
        p = ns.run([MAILWARD, "--policy", policy, "--format", "json", "probe", "127.0.0.1", "--timeout", "1",
                    "--deadline", "3"], check=False)
        elapsed = time.monotonic() - t
        self.assertLess(elapsed, 15)  # concurrent, each bounded by its 3 s deadline (slack for busy CI)
        self.assertEqual(p.returncode, 2)
        r = {x["port"]: x for x in json.loads(p.stdout)["results"]}
        self.assertTrue(all(x["state"] == "open" and x["as_policy"] is False for x in r.values()), r)
        self.assertIn("no answer within the timeout", r[143]["error"])
        self.assertIn("longer than 8192 bytes", r[110]["error"])
        self.assertIn("TLS handshake", r[993]["error"])
        self.assertTrue(r[995]["error"])
        self.assertIn("reset", r[587]["error"] + r[587]["reason"])


if __name__ == "__main__":
    unittest.main()


class NameLookupDeadline(MailwardCase):
    """A host name whose resolver never answers: the probe ends within --deadline, with a result
    saying why, instead of waiting for the resolver's own timeouts (10 s and more)."""

    def test_lookup_bounded_by_the_deadline(self):
        ns = f"mwdns{os.getpid() % 100000}"
        etc = f"/etc/netns/{ns}"
        run(["ip", "netns", "add", ns])
        self.addCleanup(lambda: run(["ip", "netns", "del", ns], check=False))
        os.makedirs(etc, exist_ok=True)
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", etc]))
        # `ip netns exec` gives this namespace its own resolv.conf: a resolver on a TEST-NET
        # address behind a veth pair with nobody at the far end, where queries vanish unanswered.
        with open(os.path.join(etc, "resolv.conf"), "w") as f:
            f.write("nameserver 192.0.2.53\noptions timeout:5 attempts:2\n")
        for argv in (["link", "set", "lo", "up"], ["link", "add", "d0", "type", "veth", "peer", "name", "d1"],
                     ["addr", "add", "192.0.2.1/24", "dev", "d0"], ["link", "set", "d0", "up"],
                     ["link", "set", "d1", "up"]):
            run(["ip", "-n", ns] + argv)
        policy = self.write("policy.yaml", "version: 1\nports:\n  imaps: {state: open}\n")
        t0 = time.monotonic()
        p = run(["ip", "netns", "exec", ns, MAILWARD, "--policy", policy, "--format", "json", "probe",
                 "mail.example.org", "--deadline", "1"], check=False)
        took = time.monotonic() - t0
        self.assertIn(p.returncode, (1, 2), p.stderr)
        j = json.loads(p.stdout)
        r = j["results"][0]
        self.assertEqual(r["state"], "filtered", r)
        self.assertIn("did not finish within the deadline", r["error"], r)
        self.assertLess(took, 8, "the resolver's 10 s of timeouts were waited for")
