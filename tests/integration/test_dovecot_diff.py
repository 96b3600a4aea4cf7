"""Differential test of the Dovecot audit against doveconf, the tool nobody here wrote.

A seeded generator writes random valid Dovecot 2.3 configurations (includes with brace globs and
40-file globs, sections opened in one file and closed in another, filters, continuations, comments
ending in a backslash, quoting, `<file`, `$key` references, values ending in `{`, listeners). For
each one:
- mailward accepts it exactly when doveconf does;
- every value of the JSON `settings` map equals `doveconf -c FILE -h KEY`, and every value of each
  judged context equals `doveconf -c FILE -f protocol=X -f remote=Y -h KEY`;
- the contexts mailward judged are the ones Dovecot evaluates (each enabled protocol, each
  remote block alone and with each protocol);
- the findings equal the ones derived here from doveconf's values by the README's rules.
Both engines (builtin and doveconf) are checked. DIFF_CONFIGS (default 200) and DIFF_SEED set the
run; a failure prints the seed and the config so it can be replayed.
"""
import concurrent.futures
import ipaddress
import json
import os
import random
import shutil
import tempfile
import unittest

from mwtest import MAILWARD, run

N = int(os.environ.get("DIFF_CONFIGS", "200"))
SEED = int(os.environ.get("DIFF_SEED", "1313"))

BOOLS = ["auth_debug", "auth_debug_passwords", "disable_plaintext_auth", "mail_debug"]
BOOL_VALUES = ["yes", "no", "Yes", "NO", "y", "Y", "1", "no"]
VALUES = {
    "auth_verbose_passwords": ["no", "plain", "sha1", "sha1:6", "yes", "no"],
    "auth_mechanisms": ["plain", "plain login", "plain anonymous", "anonymous", "login cram-md5"],
    "auth_anonymous_username": ["guest", "anon"],
    "ssl": ["yes", "no", "required", "required"],
    "ssl_min_protocol": ["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3", "ANY", "tlsv1.2"],
    "login_trusted_networks": ["10.0.0.0/8", "192.0.2.1 198.51.100.0/24", "10.1.2.3/8", "2001:db8::/32"],
    "protocols": ["imap", "imap pop3", "pop3", "imap pop3 lmtp"],
    "ssl_cert": ["<cert.pem", "< cert.pem"],  # relative to the including file; written by the generator
    "ssl_key": ["<key.pem"],
}
ALL_KEYS = BOOLS + list(VALUES)
REMOTE_OK = ["ssl", "ssl_min_protocol", "disable_plaintext_auth", "mail_debug"]  # auth_* are refused there
PROTOCOL_OK = [k for k in ALL_KEYS if k not in ("protocols", "login_trusted_networks")]
REMOTES = ["10.0.0.0/8", "192.0.2.0/24", "0.0.0.0/0", "::/0", "127.0.0.1", "2001:db8::/32", "198.51.100.7",
           "10.1.2.3/8", "127.0.0.0/8", "::1"]
LISTENERS = {"imap": ("imap-login", {"imap": (143, "no"), "imaps": (993, "yes")}),
             "pop3": ("pop3-login", {"pop3": (110, "no"), "pop3s": (995, "yes")}),
             "submission": ("submission-login", {"submission": (587, "no")}),
             "sieve": ("managesieve-login", {"sieve": (4190, "no")})}


class Gen:
    """One random configuration: main file plus includes, written into `root`."""

    def __init__(self, rnd, root):
        self.r = rnd
        self.root = root
        self.files = {"cert.pem": "CERT\n", "key.pem": "KEY\n", "d/cert.pem": "CERT\n", "d/key.pem": "KEY\n"}
        self.remotes = set()
        self.locals = set()
        self.local_names = set()
        self.listeners = {}  # (service, name)

    def value_line(self, key, indent=""):
        r = self.r
        v = r.choice(BOOL_VALUES) if key in BOOLS else r.choice(VALUES[key])
        words = v.split()
        style = r.randrange(12)
        if style == 0 and len(words) > 1:
            return f"{indent}{key} = {words[0]}\\\n{indent}  {' '.join(words[1:])}\n"     # plain\ + anonymous
        if style == 1 and len(words) > 1:
            return f"{indent}{key} = {words[0]} \\\n\t{' '.join(words[1:])}\n"
        if style == 2 and not v.startswith("<"):
            return f'{indent}{key} = "{v}"\n'
        if style == 3 and not v.startswith("<"):
            return f"{indent}{key} = '{v}'\n"
        if style == 4:
            return f"{indent}{key}={v}  # set by generator\n"
        if style == 5 and key in ("auth_mechanisms", "protocols", "login_trusted_networks"):
            return f"{indent}{key} = ${key} {v}\n"                                       # own earlier value
        if style == 6 and key in BOOLS:
            return f"{indent}{key} = ${key}\n"
        if style == 7 and key == "auth_mechanisms":
            name = f"mech{len(self.files)}.txt"
            self.files[name] = self.files["d/" + name] = v + ("\n" if r.random() < 0.5 else "")
            return f"{indent}{key} = {'< ' if r.random() < 0.5 else '<'}{name}\n"
        if style == 8 and key == "auth_anonymous_username":
            return f'{indent}{key} = "{v}\\"\n'                                          # ends in \"
        if style == 9:
            return f"{indent}# was: {key} = {v} \\\n"                                    # never continues
        if style == 11 and len(words) > 1:
            return f"{indent}{key} = {words[0]} \\\n{indent}# a comment drops the continued line\n"  # dropped
        if style == 10 and key == "auth_anonymous_username" and r.random() < 0.5:
            return f'{indent}{key} = "a#b" \t# quoted hash\n'
        if style == 10 and key in ("login_trusted_networks", "auth_anonymous_username") and r.random() < 0.3:
            return f"{indent}{key} =\n"
        if style == 10 and key == "auth_anonymous_username":
            return f"{indent}{key} = {v} $ssl $mail_debug\n"                             # other keys stay literal
        return f"{indent}{key} = {v}\n"

    def noise(self):
        r = self.r
        return r.choice([
            "\n", "# a comment\n", "   # indented comment ending in a backslash \\\n",
            "login_greeting = hello {\n", "plugin {\n  mail_debug = yes\n}\n",
            "mail_plugins = $mail_plugins quota\n", "namespace inbox {\n  inbox = yes\n}\n",
        ])

    def listener(self):
        r = self.r
        proto = r.choice(["imap", "pop3"])
        svc, defaults = LISTENERS[proto]
        name = r.choice(list(defaults) + [proto + "2"])
        self.listeners[(svc, name)] = True
        body = ""
        if r.random() < 0.8:
            body += f"    port = {r.choice([0, 143, 1143, 110, 1110, 993])}\n"
        if r.random() < 0.5:
            body += f"    ssl = {r.choice(['yes', 'no'])}\n"
        return f"service {svc} {{\n  inet_listener {name} {{\n{body}  }}\n}}\n"

    def block(self):
        r = self.r
        kind = r.randrange(8)
        if kind == 6:
            name = r.choice(["mail.example.org", "*.example.org"])
            self.local_names.add(name)
            inner = "".join(self.value_line(r.choice(REMOTE_OK), "  ") for _ in range(r.randint(1, 2)))
            return [f"local_name {name} {{\n", inner, "}\n"]
        if kind == 7:  # an include inside a section; the included file ends in a continuation
            name = f"inc{len(self.files)}.conf"
            key = r.choice(["auth_mechanisms", "protocols"] if False else ["auth_mechanisms"])
            self.files[name] = f"  {key} = plain \\"
            return ["protocol imap {\n", f"  !include {name}\n  login\n", "}\n"]
        if kind == 0:
            p = r.choice(["imap", "pop3", '"imap"', "!imap"])
            inner = "".join(self.value_line(r.choice(PROTOCOL_OK), "  ") for _ in range(r.randint(1, 3)))
            return [f"protocol {p} {{\n", inner, "}\n"]
        if kind == 4:
            net = r.choice(["192.0.2.1", "198.51.100.0/24", "127.0.0.1"])
            self.locals.add(net)
            inner = "".join(self.value_line(r.choice(REMOTE_OK), "\t") for _ in range(r.randint(1, 2)))
            return [f"local {net} {{\n", inner, "}\n"]
        if kind == 5:
            self.remotes.update(["10.0.0.0/8", "10.1.0.0/16"])
            inner = "  remote 10.1.0.0/16 {\n" + self.value_line(r.choice(REMOTE_OK), "    ") + "  }\n"
            return ["remote 10.0.0.0/8 {\n", self.value_line(r.choice(REMOTE_OK), "  ") + inner, "}\n"]
        net = r.choice(REMOTES)
        self.remotes.add(net)
        inner = "".join(self.value_line(r.choice(REMOTE_OK), "  ") for _ in range(r.randint(1, 2)))
        if r.random() < 0.03:  # invalid: both must refuse it
            inner += "  auth_verbose = yes\n"
        if kind == 3:
            p = r.choice(["imap", "pop3"])
            inner += f"  protocol {p} {{\n" + self.value_line(r.choice(REMOTE_OK), "    ") + "  }\n"
        return [f"remote {net} {{\n", inner, "}\n"]

    def write(self):
        r = self.r
        chunks = []
        for _ in range(r.randint(4, 14)):
            x = r.random()
            if x < 0.55:
                chunks.append([self.value_line(r.choice(ALL_KEYS))])
            elif x < 0.75:
                chunks.append(self.block())
            elif x < 0.85:
                chunks.append([self.listener()])
            else:
                chunks.append([self.noise()])
        main = []
        split = r.random()
        if split < 0.3 and len(chunks) > 3:
            # Brace glob; a section opened in a.conf and closed in b.conf when one is at hand.
            i = r.randrange(len(chunks) - 2)
            a, b = chunks[i], chunks[i + 1]
            if len(a) == 3 and r.random() < 0.6:
                self.files["d/a.conf"], self.files["d/b.conf"] = a[0] + a[1], a[2] + "".join(b)
            else:
                self.files["d/a.conf"], self.files["d/b.conf"] = "".join(a), "".join(b)
            chunks[i:i + 2] = [[r.choice(["!include d/{a,b}.conf\n", "!include d/{a,b}*.conf\n"])]]
        elif split < 0.4:
            for i in range(40):  # a glob with 40 matches: siblings, not nesting
                self.files[f"many/{i:02d}.conf"] = self.value_line(r.choice(BOOLS)) if i % 7 == 0 else "# empty\n"
            chunks.insert(r.randrange(len(chunks) + 1), ["!include many/*.conf\n"])
        if r.random() < 0.2:
            chunks.insert(r.randrange(len(chunks) + 1), ["!include_try missing/*.conf\n"])
        for c in chunks:
            main.extend(c)
        self.files["dovecot.conf"] = "".join(main)
        for name, text in self.files.items():
            path = os.path.join(self.root, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
            if name.endswith("key.pem"):
                os.chmod(path, 0o600)
        return os.path.join(self.root, "dovecot.conf")


def doveconf_values(config, keys, filters=(), cache=None):
    """doveconf's values of `keys` in one run (`KEY = VALUE` lines, the same values as -h), or
    (None, error)."""
    ck = (tuple(keys), tuple(filters))
    if cache is not None and ck in cache:
        return cache[ck]
    argv = ["doveconf", "-c", config]
    for k, v in filters:
        argv += ["-f", f"{k}={v}"]
    p = run(argv + list(keys), check=False)
    if p.returncode != 0:
        res = (None, p.stderr.strip())
    else:
        out = {}
        for line in p.stdout.splitlines():
            k, sep, v = line.partition(" = ")
            if sep:
                out[k] = v
            elif line.endswith(" ="):
                out[line[:-2]] = ""
        res = (out, "")
    if cache is not None:
        cache[ck] = res
    return res


def is_loopback(net):
    n = ipaddress.ip_network(net, strict=False)
    return n.prefixlen > 0 and (n.subnet_of(ipaddress.ip_network("127.0.0.0/8")) if n.version == 4
                                else n == ipaddress.ip_network("::1/128"))


def derive_findings(config, contexts, values, listener_values):
    """The README's rules applied to doveconf's values. Returns {(id, context...)}."""
    found = set()
    for ctx, loop in contexts:
        v = values[ctx]
        yes = lambda k: v[k] == "yes"
        if yes("auth_debug"):
            found.add(("auth-debug", ctx))
        if yes("auth_debug_passwords"):
            found.add(("auth-debug-passwords", ctx))
        if v["auth_verbose_passwords"].split(":")[0] in ("plain", "yes", "sha1"):
            found.add(("auth-verbose-passwords", ctx))
        if yes("mail_debug"):
            found.add(("mail-debug", ctx))
        mech = v["auth_mechanisms"]
        if "<" in mech:  # what Dovecot runs with: doveconf -x reads the file
            argv = ["doveconf", "-c", config, "-x"]
            for k, val in context_filters(ctx):
                argv += ["-f", f"{k}={val}"]
            mech = run(argv + ["-h", "auth_mechanisms"]).stdout
        if "anonymous" in mech.lower().split():
            found.add(("anonymous-login", ctx))
        if not loop:
            if v["disable_plaintext_auth"] == "no" and v["ssl"] != "required":
                found.add(("cleartext-auth", ctx))
            if v["ssl"] == "no":
                found.add(("ssl-disabled", ctx))
            if v["ssl_min_protocol"].lower() in ("sslv3", "tlsv1", "tlsv1.1", "any"):
                found.add(("weak-tls-protocol", ctx))
    for w in values[""]["login_trusted_networks"].split():
        n = ipaddress.ip_network(w, strict=False)
        if n.prefixlen <= (8 if n.version == 4 else 16):
            found.add(("trusted-networks-broad", ""))
            break
    protos = values[""]["protocols"].split()
    for proto, (svc, _) in LISTENERS.items():
        if proto not in protos:
            continue
        if not any(("cleartext-auth", c) in found for c, loop in contexts if f"protocol={proto}" in c.split()):
            continue
        for name, (port, ssl) in listener_values.get(svc, {}).items():
            if port != "0" and ssl != "yes":
                found.add(("plaintext-listener", f"listener {svc}/{name}"))
    return found


def context_filters(ctx):
    return [tuple(part.split("=", 1)) for part in ctx.split()]


class DoveconfDifferential(unittest.TestCase):
    maxDiff = None

    def test_random_configs_agree_with_doveconf(self):
        rnd = random.Random(SEED)
        base = tempfile.mkdtemp(prefix="mwdiff")
        self.addCleanup(shutil.rmtree, base)
        cases = []
        for n in range(N):  # generated in order, so a seed always gives the same configs
            g = Gen(rnd, os.path.join(base, str(n)))
            cases.append((n, g, g.write()))
        # Checked three at a time: the time goes into waiting for doveconf and mailward.
        with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
            results = list(pool.map(lambda c: self.check_one(*c), cases))
        problems = [p for r in results for p in r]
        print(f"\n{len(cases)} configs compared with doveconf (seed {SEED}), {len(problems)} disagreements")
        self.assertEqual(problems[:10], [])

    def check_one(self, n, g, config):
        with open(config) as f:
            text = f.read()
        where = f"config #{n} (DIFF_SEED={SEED}):\n{text}\n" + "".join(
            f"--- {k}\n{v}" for k, v in g.files.items() if k != "dovecot.conf" and not k.startswith("many/"))
        dc = run(["doveconf", "-c", config, "-h", "protocols"], check=False)
        problems = []
        cache = {}
        for engine in ("builtin", "doveconf"):
            p = run([MAILWARD, "--policy", "/nonexistent", "--format", "json", "audit", "dovecot", "--engine", engine,
                     "--config", config], check=False)
            accepted = p.returncode in (0, 2)
            if accepted != (dc.returncode == 0):
                problems.append(f"{engine}: mailward {'accepts' if accepted else 'refuses'} ({p.stderr.strip()}), "
                                f"doveconf {'accepts' if dc.returncode == 0 else 'refuses'} ({dc.stderr.strip()}) in {where}")
                continue
            if not accepted:
                continue
            j = json.loads(p.stdout)
            if j["engine"] != engine:
                problems.append(f"engine {j['engine']} != {engine}")
            keys = sorted(j["settings"])
            values = {}
            got, err = doveconf_values(config, keys, cache=cache)
            values[""] = got
            for k in keys:
                if j["settings"][k]["value"] != got[k]:
                    problems.append(f"{engine}: {k}: mailward {j['settings'][k]['value']!r} doveconf {got[k]!r} in {where}")
            # The contexts Dovecot evaluates.
            protos = list(dict.fromkeys(got["protocols"].split()))
            want = {f"protocol={p}" for p in protos}
            for net in g.remotes:
                if ipaddress.ip_network(net, strict=False).prefixlen == 0:
                    continue
                want.add(f"remote={net}")
                want |= {f"protocol={p} remote={net}" for p in protos}
            for name in g.local_names:
                want.add(f"lname={name}")
                want |= {f"protocol={p} lname={name}" for p in protos}
            for net in g.locals:
                want.add(f"local={net}")
                want |= {f"protocol={p} local={net}" for p in protos}
            have = {c["context"] for c in j["contexts"]}
            if have != want:
                problems.append(f"{engine}: contexts {sorted(have)} != {sorted(want)} in {where}")
            contexts = [("", False)]
            conflicts = set()
            for c in j["contexts"]:
                filters = context_filters(c["context"])
                vals, err = doveconf_values(config, keys, filters, cache=cache)
                if vals is None:
                    if "Conflict in setting" not in err:
                        problems.append(f"{engine}: doveconf {filters}: {err}")
                    conflicts.add(c["context"])
                    continue  # Dovecot refuses such a client; nothing to compare
                values[c["context"]] = vals
                nets = [v for k, v in filters if k in ("remote", "local")]
                contexts.append((c["context"], any(is_loopback(n) for n in nets)))
                for k in keys:
                    if c["settings"][k]["value"] != vals[k]:
                        problems.append(f"{engine}: [{c['context']}] {k}: mailward {c['settings'][k]['value']!r} "
                                        f"doveconf {vals[k]!r} in {where}")
            warned = {w.split(": two filters")[0] for w in j["warnings"] if ": two filters that are not nested" in w}
            if warned != conflicts:
                problems.append(f"{engine}: conflict warnings for {sorted(warned)}, doveconf conflicts in "
                                f"{sorted(conflicts)} in {where}")
            if len(contexts) != len(j["contexts"]) + 1:
                continue  # a conflict: findings in that context are Dovecot's refusal, not compared
            listener_values = {}
            names = {(svc, name) for proto, (svc, defaults) in LISTENERS.items() for name in defaults} | set(g.listeners)
            lkeys = [f"service/{svc}/inet_listener/{name}/{k}" for svc, name in sorted(names) for k in ("port", "ssl")]
            lv, _ = doveconf_values(config, lkeys, cache=cache)
            for svc, name in sorted(names):
                base = f"service/{svc}/inet_listener/{name}/"
                if lv is not None and base + "port" in lv:
                    listener_values.setdefault(svc, {})[name] = (lv[base + "port"], lv[base + "ssl"])
            want_f = derive_findings(config, contexts, values, listener_values)
            have_f = set()
            for f in j["findings"]:
                for c in f["contexts"]:
                    have_f.add((f["id"], c))
            if have_f != want_f:
                problems.append(f"{engine}: findings: extra {sorted(have_f - want_f)} missing {sorted(want_f - have_f)} "
                                f"in {where}")
        return problems


if __name__ == "__main__":
    unittest.main()
