#!/usr/bin/env bash
# Installs what is missing, builds, and tells mailward's story on throwaway network namespaces
# (the machine's own firewall is never touched): a mail host running a real Dovecot and a client
# network with a stranger (198.51.100.2) and the office (198.51.100.3). mailward closes IMAP 143
# and POP3 110 to strangers, keeps 993/995 open, proves it from the client side, explains a path,
# notices hand-made drift and repairs it.
# MAILWARD_DEMO_BIN=PATH runs the story with that binary, skipping the set-up (the test suite does).
if [ -n "${MAILWARD_DEMO_BIN:-}" ]; then
  set -euo pipefail
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  mailward=$MAILWARD_DEMO_BIN
else
  source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
  mailward=build/mailward
fi
tag=$$
host=mwdemo-h$tag client=mwdemo-c$tag
work=$(mktemp -d); chmod 700 "$work"; state=$work/state
cleanup() {
  ip netns exec "$host" doveadm -c "$work/dovecot.conf" stop >/dev/null 2>&1 || true
  ip netns del "$host" 2>/dev/null || true
  ip netns del "$client" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

ip netns add "$host"; ip netns add "$client"
ip -n "$host" link set lo up; ip -n "$client" link set lo up
ip link add mwd-h$tag type veth peer name mwd-c$tag
ip link set mwd-h$tag netns "$host"; ip link set mwd-c$tag netns "$client"
ip -n "$host" addr add 198.51.100.1/24 dev mwd-h$tag
ip -n "$client" addr add 198.51.100.2/24 dev mwd-c$tag
ip -n "$client" addr add 198.51.100.3/24 dev mwd-c$tag
ip -n "$host" link set mwd-h$tag up; ip -n "$client" link set mwd-c$tag up

# A real Dovecot in the host namespace, with its own base_dir (it never meets a system one).
mkdir -p "$work/run" "$work/state-dovecot" "$work/mail"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/key.pem" -out "$work/cert.pem" -days 2 \
  -subj /CN=mail.example >/dev/null 2>&1
cat > "$work/dovecot.conf" <<CONF
base_dir = $work/run
state_dir = $work/state-dovecot
protocols = imap pop3
listen = *
ssl = yes
ssl_cert = <$work/cert.pem
ssl_key = <$work/key.pem
disable_plaintext_auth = yes
auth_mechanisms = plain
passdb {
  driver = static
  args = password=secret
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$work/mail/%u
}
mail_location = maildir:$work/mail/%u
log_path = $work/dovecot.log
# A setting left from a debugging session: Dovecot logs every failed password in cleartext.
auth_verbose = yes
auth_verbose_passwords = plain
!include conf.d/*.conf
CONF
mkdir -p "$work/conf.d"; echo "# this host's own settings" > "$work/conf.d/10-local.conf"
chmod 600 "$work/key.pem"
ip netns exec "$host" dovecot -c "$work/dovecot.conf"
for i in $(seq 100); do ip netns exec "$host" bash -c "exec 3<>/dev/tcp/127.0.0.1/993" 2>/dev/null && break; sleep 0.1; done

cat > "$work/policy.yaml" <<POLICY
version: 1
allowlists:
  office: [198.51.100.3]
ports:
  imap:  {state: closed, allow: [office]}   # 143: cleartext until STARTTLS
  pop3:  {state: closed, action: reject}    # 110
  imaps: {state: open, rate_limit: 30/minute}
  pop3s: {state: open}
dovecot:
  config: $work/dovecot.conf
POLICY
mw() { ip netns exec "$host" "$mailward" --policy "$work/policy.yaml" --state-dir "$state" "$@"; }
# From the client network: "open" (greeting read), "closed" (refused) or "filtered" (no answer).
knock() {
  ip netns exec "$client" python3 - "$1" "$2" <<'PY'
import socket, sys
src, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(); s.settimeout(1.5); s.bind((src, 0))
try:
    s.connect(("198.51.100.1", port)); s.settimeout(0.5)
    try: greeting = s.recv(60).decode(errors="replace").strip()[:40]
    except socket.timeout: greeting = "(TLS: the client speaks first)"
    print(f"{src} -> :{port}  open    {greeting}")
except ConnectionRefusedError: print(f"{src} -> :{port}  closed (refused)")
except socket.timeout: print(f"{src} -> :{port}  filtered (no answer)")
PY
}

say "the policy"; cat "$work/policy.yaml"
say "validate"; "$mailward" --policy "$work/policy.yaml" validate
say "before: everything reachable from anywhere"
for p in 143 110 993; do knock 198.51.100.2 $p; done
say "plan (exit 2: changes pending)"; mw plan || [ $? -eq 2 ]
say "apply (one atomic batch, read back, probes)"; mw apply
say "after: a stranger (.2) and the office (.3), from the client network"
for p in 143 110 993; do knock 198.51.100.2 $p; done
knock 198.51.100.3 143
say "explain: why the stranger cannot reach 143"; mw explain 143 --from 198.51.100.2
say "status"; mw status
say "Dovecot audit: a risky setting, with its file:line and fix (exit 2)"
mw audit dovecot || [ $? -eq 2 ]
say "audit --fix: a hardening drop-in, checked with doveconf; Dovecot reloads it"
mw audit dovecot --fix
ip netns exec "$host" doveadm -c "$work/dovecot.conf" reload
mw audit dovecot
say "someone edits the firewall by hand: the office's address vanishes from the allowlist"
ip netns exec "$host" nft delete element inet mailward allow_office_hosts_v4 '{ 198.51.100.3 }'
mw check --no-probe && { echo "drift not found"; exit 1; } || echo "(check exit $?: drift found)"
say "apply repairs it, check is clean"; mw apply -q; mw check
knock 198.51.100.3 143
say "done: everything ran in namespaces mailward's demo made and removes now"
