"""Coexistence with nftables' own test rulesets (tests/corpus/nftables-rulesets, 164 files):
with each one loaded, apply succeeds, every other table stays byte-identical, the live-state
reader copes with whatever it finds, and plan says in sync afterwards."""
import glob
import os
import unittest

from mwtest import MailwardCase, Sandbox, other_tables

CORPUS = os.path.join(os.path.dirname(__file__), "..", "corpus", "nftables-rulesets")
POLICY = """\
version: 1
allowlists:
  office: [198.51.100.0/24, 2001:db8:10::/48, 192.0.2.7]
ports:
  imap: {state: closed, allow: [office]}
  imaps: {state: open, rate_limit: 20/minute}
  pop3: {state: closed, action: reject}
"""


class Corpus(MailwardCase):
    def test_every_ruleset(self):
        files = sorted(glob.glob(os.path.join(CORPUS, "*.nft")))
        self.assertEqual(len(files), 164)
        policy = self.write("policy.yaml", POLICY)
        for path in files:
            name = os.path.basename(path)
            with self.subTest(ruleset=name):
                ns = Sandbox()
                try:
                    ns.run(["nft", "-f", path])
                    before = other_tables(ns.run)
                    # --no-probe: a probe is traffic, and other tables' counters and meters
                    # would count it; what is compared here is what mailward writes.
                    p = self.mw(ns.run, "apply", "--no-probe", policy=policy)
                    self.assertEqual(p.returncode, 0, f"{name}: {p.stderr}")
                    self.assertEqual(other_tables(ns.run), before, name)
                    p = self.mw(ns.run, "plan", policy=policy)
                    self.assertEqual(p.returncode, 0, f"{name}: {p.stdout}{p.stderr}")
                    p = self.mw(ns.run, "check", "--no-probe", policy=policy)  # conflicts may show: 0 or 2
                    self.assertIn(p.returncode, (0, 2), f"{name}: {p.stderr}")
                finally:
                    ns.close()
                    # A fresh state dir per ruleset: the next namespace shares no cache.
                    os.system(f"rm -rf {self.state}")


if __name__ == "__main__":
    unittest.main()
