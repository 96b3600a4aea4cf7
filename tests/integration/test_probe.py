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


def start_dovecot(ns, d):
    os.makedirs(f"{d}/run")
    os.makedirs(f"{d}/state")
    os.makedirs(f"{d}/mail")
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{d}/key.pem", "-out",
         f"{d}/cert.pem", "-days", "2", "-subj", "/CN=mail.test"])
    with open(f"{d}/dovecot.conf", "w") as f:
        f.write(textwrap.dedent(f"""\
            base_dir = {d}/run
            state_dir = {d}/state
            protocols = imap pop3
            listen = *, ::
            ssl = yes
            ssl_cert = <{d}/cert.pem
            ssl_key = <{d}/key.pem
            disable_plaintext_auth = yes
            auth_mechanisms = plain
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
            """))
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
