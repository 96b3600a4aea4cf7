#!/usr/bin/env bash
# Installs every Debian package mailward needs to build, test and benchmark.
# Idempotent: packages already present are not downloaded again.
set -euo pipefail
pkgs=(
  build-essential cmake pkg-config git
  libnftnl-dev libmnl-dev libyaml-cpp-dev libcli11-dev libgtest-dev libgmock-dev
  nlohmann-json3-dev libssl-dev
  nftables iptables ipset ufw iproute2
  dovecot-imapd dovecot-pop3d openssl nmap python3 ansible-core
  clang libclang-rt-14-dev systemd
  docker.io busybox-static fail2ban firewalld dbus python3-nftables
  openssh-server
  python3-voluptuous  # ansible-test sanity --test validate-modules, offline (--local)
  gcovr  # scripts/coverage.sh: line coverage of src/ by the unit tests
  prometheus  # promtool checks the metrics file (tests); its service is never started here
  lintian  # test_packaging: the .deb passes lintian with no errors
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Never let a package's postinst start a service on this host (dovecot, ufw...).
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
