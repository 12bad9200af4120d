#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for mptcrypt, as root, idempotently: the system packages the daemon, the
# topologies and the tests use, then the project's virtualenv (.venv) with the package installed editable.
set -euo pipefail
cd "$(dirname "$0")/.."

# iproute2/iptables: namespaces, veth, NFQUEUE rules; libnetfilter-queue-dev + build-essential: netfilterqueue's
# build; tcpdump/tshark: captures and the independent MPTCP decoder; mptcpd: mptcpize; iperf3/curl: unmodified
# tools over MPTCP; mininet: its Python library (the topology files load with the real mininet.topo.Topo);
# iputils-ping: reachability and loss tests of the topologies; python3-venv: the venv when python3 is Debian's.
APT_PACKAGES=(iproute2 iptables libnetfilter-queue-dev libssl-dev build-essential tcpdump tshark mptcpd mptcpize iperf3 curl ethtool mininet
              iputils-ping python3-venv)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing system packages (${missing[*]}); run as root" >&2
    exit 77
  fi
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  # --no-install-recommends: mininet recommends Open vSwitch, whose daemons nothing here uses.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import mptcrypt, netfilterqueue, pyroute2, cryptography, hypothesis, scapy, rich, matplotlib" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.mptcrypt-installed ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  touch .venv/.mptcrypt-installed
fi
echo "setup: ready (.venv/bin/python, $(.venv/bin/python --version))"
