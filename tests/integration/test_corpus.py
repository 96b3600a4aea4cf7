"""Coexistence with nftables' own test rulesets (tests/corpus/nftables-rulesets, 164 files) and
the truth of `check` on each: with each one loaded in a host namespace, apply succeeds, every
other table stays byte-identical, plan says in sync afterwards, and check's conflicts say exactly
where real connections from a client namespace do not behave as the policy says."""
import glob
import json
import os
import unittest

from mwtest import (ALLOWED_V4, ALLOWED_V6, HOST_V4, HOST_V6, PLAIN_V4, PLAIN_V6, MailwardCase, Topology,
                    other_tables, run)

CORPUS = os.path.join(os.path.dirname(__file__), "..", "corpus", "nftables-rulesets")
POLICY = f"""\
version: 1
backend: nftables
allowlists:
  office: [{ALLOWED_V4}, {ALLOWED_V6}, 192.0.2.7]
ports:
  imap: {{state: closed, allow: [office]}}
  imaps: {{state: open, rate_limit: 20/minute}}
  pop3: {{state: closed, action: reject}}
"""
PORTS = (110, 143, 993)

# Every connection of one ruleset at once, from the client namespace: open (the handshake
# completed), closed (refused or reset) or filtered (no answer).
CONNECT_ALL = """
import socket, sys, threading, json
res = {}
def one(dst, port, src):
    fam = socket.AF_INET6 if ':' in dst else socket.AF_INET
    s = socket.socket(fam); s.settimeout(1.5); s.bind((src, 0))
    try:
        s.connect((dst, port)); res[f"{port} {src}"] = "open"
    except (ConnectionRefusedError, ConnectionResetError, OSError) as e:
        res[f"{port} {src}"] = "filtered" if isinstance(e, socket.timeout) else "closed"
    finally:
        s.close()
ts = [threading.Thread(target=one, args=a) for a in json.loads(sys.argv[1])]
[t.start() for t in ts]; [t.join() for t in ts]
print(json.dumps(res))
"""


def expected(port, src):
    """What the policy says a connection from src to port does."""
    if port == 993:
        return "reaches"
    if port == 143 and src in (ALLOWED_V4, ALLOWED_V6):
        return "reaches"
    return "blocked"


class Corpus(MailwardCase):
    def test_every_ruleset(self):
        only = os.environ.get("MAILWARD_CORPUS_GLOB")  # for a developer's quick rerun of some
        files = sorted(glob.glob(os.path.join(CORPUS, only or "*.nft")))
        if not only:
            self.assertEqual(len(files), 164)
        policy = self.write("policy.yaml", POLICY)
        disagreements = []
        for path in files:
            name = os.path.basename(path)
            with self.subTest(ruleset=name):
                topo = Topology()
                try:
                    topo.in_host(["nft", "-f", path])
                    before = other_tables(topo.in_host)
                    # --no-probe: a probe is traffic, and other tables' counters and meters
                    # would count it; what is compared here is what mailward writes.
                    p = self.mw(topo.in_host, "apply", "--no-probe", policy=policy)
                    self.assertEqual(p.returncode, 0, f"{name}: {p.stderr}")
                    self.assertEqual(other_tables(topo.in_host), before, name)
                    p = self.mw(topo.in_host, "plan", policy=policy)
                    self.assertEqual(p.returncode, 0, f"{name}: {p.stdout}{p.stderr}")
                    p = self.mw(topo.in_host, "--format", "json", "check", "--no-probe", policy=policy)
                    self.assertIn(p.returncode, (0, 2), f"{name}: {p.stderr}")
                    j = json.loads(p.stdout)
                    self.assertEqual(p.returncode == 0, j["clean"], name)
                    # Real connections.
                    topo.serve(PORTS)
                    pairs = [(dst, port, src) for port in PORTS
                             for dst, srcs in ((HOST_V4, (PLAIN_V4, ALLOWED_V4)), (HOST_V6, (PLAIN_V6, ALLOWED_V6)))
                             for src in srcs]
                    got = json.loads(run(["ip", "netns", "exec", topo.client, "python3", "-c", CONNECT_ALL,
                                          json.dumps(pairs)]).stdout)
                    for dst, port, src in pairs:
                        family = "ipv6" if ":" in src else "ipv4"
                        real = "reaches" if got[f"{port} {src}"] == "open" else "blocked"
                        allowed = src in (ALLOWED_V4, ALLOWED_V6)
                        kinds = {c["kind"] for c in j["conflicts"] if c["port"] == port and c["family"] == family
                                 and c["certainty"] in ("blocks", "reaches")}
                        maybe = [c for c in j["conflicts"] if c["port"] == port and c["family"] == family
                                 and c["certainty"].startswith("may")]
                        if port == 993:
                            says_ok = "open-port-blocked" not in kinds
                        elif allowed and port == 143:
                            says_ok = "allowlist-blocked" not in kinds
                        else:
                            says_ok = "closed-port-reachable" not in kinds
                        as_policy = real == expected(port, src)
                        if maybe and not kinds:
                            continue  # undecidable here (a limit, a queue): either outcome is honest
                        if says_ok != as_policy:
                            disagreements.append(f"{name}: {port}/{src}: connection {got[f'{port} {src}']}, "
                                                 f"check {'clean' if says_ok else 'conflict'} "
                                                 f"{[c for c in j['conflicts'] if c['port'] == port and c['family'] == family]}")
                finally:
                    topo.close()
                    # A fresh state dir per ruleset: the next namespace shares no cache.
                    os.system(f"rm -rf {self.state}")
        self.assertEqual(disagreements, [], "\n".join(disagreements))


if __name__ == "__main__":
    unittest.main()
