#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for mptcrypt, as root, idempotently: the system packages the daemon, the
# topologies, the demo, the benchmarks and the tests run, then the project's virtualenv (.venv) with the package
# installed editable (and its `dev` extra: pytest, hypothesis, ...), then `mptcrypt` on PATH. It ends by checking
# that every program the project starts is there, and fails with the list of what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# Debian packages, one a line, with what needs them (keep it one list: other changes add lines here).
APT_PACKAGES=(
  iproute2                # ip (netns, link, addr, route, mptcp), ss, tc: topologies, daemon tests, handover
  iptables                # iptables/ip6tables(-save/-restore): the daemon's NFQUEUE chains, loss, attack rules
  procps                  # sysctl: the downgrade attack's bridge-nf switch, the codec cross-check
  libnetfilter-queue-dev  # netfilterqueue's build (pip)
  libssl-dev              # OpenSSL 3 headers and libcrypto: the compiled segment path (setup.py builds it)
  build-essential         # gcc for netfilterqueue's build
  python3-venv            # the venv, when python3 is Debian's
  tcpdump                 # captures: demo, daemon and handover tests, codec cross-check
  tshark                  # the independent MPTCP decoder of the codec cross-check
  mptcpize                # unmodified tools over MPTCP (Debian 12 ships it apart from mptcpd)
  mptcpd                  # the MPTCP path manager daemon, for trying configurations by hand
  curl                    # an unmodified client through mptcpize (daemon end-to-end test)
  iperf3                  # unmodified bulk transfer over MPTCP, for measuring by hand (mptcpize run iperf3 ...)
  ethtool                 # offload settings of the emulated links, for measuring by hand
  iputils-ping            # ping: reachability and loss tests of the topologies
  mininet                 # its Python library: topology files also load with the real mininet.topo.Topo
  systemd                 # systemd-analyze: the test verifying mptcrypt/packaging/mptcrypt.service
)

# Every program the code, tests, benchmarks, demo or CLI start (subprocess, `ip netns exec`, node.run/cmd/popen),
# with the package that has it. setup fails if one is missing after the install.
REQUIRED_COMMANDS=(
  ip ss tc                                                            # iproute2
  iptables iptables-save iptables-restore                             # iptables
  ip6tables ip6tables-save ip6tables-restore                          # iptables
  sysctl                                                              # procps
  gcc                                                                 # build-essential
  tcpdump tshark mptcpize curl ping systemd-analyze                   # their packages
  sh cat sleep                                                        # base system
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing system packages (${missing[*]}); run as root" >&2
    exit 77
  fi
  echo "setup: installing ${missing[*]}"
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
if ! .venv/bin/python -c "import mptcrypt, netfilterqueue, pyroute2, cryptography, pytest, hypothesis, scapy, rich, matplotlib" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.mptcrypt-installed ] || [ setup.py -nt .venv/.mptcrypt-installed ] \
   || [ -n "$(find mptcrypt -name '*.[ch]' -newer .venv/.mptcrypt-installed 2>/dev/null | head -1)" ]; then
  # a changed C source (after a pull) rebuilds the extensions: an editable install keeps the old .so otherwise
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  touch .venv/.mptcrypt-installed
fi

absent=()
for cmd in "${REQUIRED_COMMANDS[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || absent+=("$cmd")
done
[ -x .venv/bin/mptcrypt ] || absent+=(".venv/bin/mptcrypt")
if [ "${#absent[@]}" -gt 0 ]; then
  echo "setup: still missing after the install: ${absent[*]} (APT_PACKAGES above says which package has each)" >&2
  exit 1
fi

# `mptcrypt` on PATH: a link in /usr/local/bin to this checkout's entry point. Made when absent or dangling, and
# renewed when it is a link an mptcrypt setup made (it points at some checkout's .venv/bin/mptcrypt): the checkout
# set up last is the one on PATH, as the README's commands expect. Anything else there is left alone.
LINK=/usr/local/bin/mptcrypt
TARGET=$ROOT/.venv/bin/mptcrypt
where="$LINK -> $TARGET"
current=$(readlink "$LINK" 2>/dev/null || true)
if [ "$current" = "$TARGET" ]; then
  :
elif { [ ! -e "$LINK" ] && [ ! -L "$LINK" ]; } || { [ -L "$LINK" ] && { [ ! -e "$LINK" ] || [[ "$current" == */.venv/bin/mptcrypt ]]; }; }; then
  if ln -sfn "$TARGET" "$LINK" 2>/dev/null; then
    [ -n "$current" ] && where="$where (was $current)"
  else
    where="$TARGET (could not link $LINK: not root?)"
  fi
else
  where="$TARGET ($LINK is not a link made by this setup: left alone; replace it with ln -sfn $TARGET $LINK)"
fi
echo "setup: ready (.venv/bin/python, $(.venv/bin/python --version)); mptcrypt is $where"
