"""Coexistence with nftables' own test rulesets (tests/corpus/nftables-rulesets, 164 files) and
the truth of `check` on each: with each one loaded in a host namespace, apply succeeds, every
other table stays byte-identical, plan says in sync afterwards, and check's conflicts say exactly
where real connections from a client namespace do not behave as the policy says."""
import concurrent.futures
import glob
import json
import os
import shutil
import unittest

from mwtest import (ALLOWED_V4, ALLOWED_V6, HOST_V4, HOST_V6, MAILWARD, PLAIN_V4, PLAIN_V6, MailwardCase, Topology,
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
    def one(self, path, policy):
        """Checks one ruleset; returns (problems, disagreements) as lists of strings."""
        name = os.path.basename(path)
        state = os.path.join(self.dir, "state-" + name)
        problems, disagreements = [], []

        def mw(topo, *args):
            return run(["ip", "netns", "exec", topo.host, MAILWARD, "--state-dir", state, "--policy", policy] + list(args),
                       check=False)

        topo = Topology()
        try:
            topo.in_host(["nft", "-f", path])
            before = other_tables(topo.in_host)
            # --no-probe: a probe is traffic, and other tables' counters and meters would count
            # it; what is compared here is what mailward writes.
            p = mw(topo, "apply", "--no-probe")
            if p.returncode != 0:
                return [f"{name}: apply: {p.stderr}"], []
            if other_tables(topo.in_host) != before:
                problems.append(f"{name}: another table changed")
            p = mw(topo, "plan")
            if p.returncode != 0:
                problems.append(f"{name}: plan not in sync: {p.stdout}{p.stderr}")
            p = mw(topo, "--format", "json", "check", "--no-probe")
            if p.returncode not in (0, 2):
                return problems + [f"{name}: check: {p.stderr}"], []
            j = json.loads(p.stdout)
            if (p.returncode == 0) != j["clean"]:
                problems.append(f"{name}: exit {p.returncode} but clean={j['clean']}")
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
                mine = [c for c in j["conflicts"] if c["port"] == port and c["family"] == family]
                kinds = {c["kind"] for c in mine if c["certainty"] in ("blocks", "reaches")}
                maybe = [c for c in mine if c["certainty"].startswith("may")]
                if port == 993:
                    says_ok = "open-port-blocked" not in kinds
                elif allowed and port == 143:
                    says_ok = "allowlist-blocked" not in kinds
                else:
                    says_ok = "closed-port-reachable" not in kinds
                if maybe and not kinds:
                    continue  # undecidable here (a limit, a queue): either outcome is honest
                if says_ok != (real == expected(port, src)):
                    disagreements.append(f"{name}: {port}/{src}: connection {got[f'{port} {src}']}, "
                                         f"check {'clean' if says_ok else 'conflict'} {mine}")
        finally:
            topo.close()
            shutil.rmtree(state, ignore_errors=True)
        return problems, disagreements

    def test_every_ruleset(self):
        only = os.environ.get("MAILWARD_CORPUS_GLOB")  # for a developer's quick rerun of some
        files = sorted(glob.glob(os.path.join(CORPUS, only or "*.nft")))
        if not only:
            self.assertEqual(len(files), 164)
        policy = self.write("policy.yaml", POLICY)
        problems, disagreements = [], []
        # Four rulesets at a time, each in namespaces of its own: most of the time is spent
        # waiting for the connections that get no answer.
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            for p, d in pool.map(lambda f: self.one(f, policy), files):
                problems += p
                disagreements += d
        self.assertEqual(problems, [], "\n".join(problems))
        self.assertEqual(disagreements, [], "\n".join(disagreements))


if __name__ == "__main__":
    unittest.main()
