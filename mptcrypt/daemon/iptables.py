"""The daemon's iptables rules: its own chains, installed on start and removed on exit.

Everything happens in the CURRENT network namespace (run the daemon with `ip netns exec NS ...` to act on another
one). Two chains in the `filter` table, each jumped to from position 1 of its hook chain:

    OUTPUT -> MPTC-OUT                       INPUT -> MPTC-IN
      -m mark --mark INJECT_MARK -j RETURN     -m mark --mark INJECT_MARK -j RETURN
      -o lo -j RETURN                          -i lo -j RETURN
                                               -p tcp --tcp-flags SYN SYN [ports] -j NFQUEUE --queue-num N+1
      -p tcp [-m multiport --ports P] -j NFQUEUE --queue-num N [--queue-bypass]

* Two lanes: arriving SYNs and SYN-ACKs go to queue N+1 (`syn_lane_queue`; N+W.. with W workers), every other segment
  to queue N. The daemon drains queue N first and takes only a short slice of N+1 per wakeup (daemon/lanes.py), so a
  flood of spoofed SYNs fills and overflows the SYN lane (the kernel drops them there) instead of the queue that
  carries the established connections' segments (issue 12 item 6: one shared queue let a 20k SYN/s flood stall a
  transfer). The host's own SYNs and SYN-ACKs stay on queue N: an inbound flood must not delay the SYN-ACK of a client
  whose SYN got through, a join during a handover, or the host's own connections (and the kernel sends SYN-ACKs only
  for SYNs the SYN lane passed, so their rate is bounded by it). Order within a connection is unaffected: a TCP
  endpoint sends no other segment of a subflow before its SYN or SYN-ACK has been answered, and the daemon's verdict
  on it comes first.

With `--workers W` the target is `--queue-balance N:N+W-1`: the kernel spreads flows over W queues by a hash of
the address pair (the same in both directions), one worker process per queue (daemon/workers.py).

* The mark rule lets segments the daemon made itself (raw socket with SO_MARK = INJECT_MARK) pass without being
  queued to it a second time.
* Loopback is NOT protected. Its MTU is 64 KiB and netfilterqueue copies at most 4016 bytes of a packet to user
  space, so the daemon could not see (let alone rewrite) whole loopback segments. Traffic between two addresses of
  the same host travels over `lo` and is left alone; it never leaves the machine.
* Fail-closed by default: without `--queue-bypass` the kernel drops what it would queue while no process listens
  on the queue (daemon crashed, or not started yet), so nothing leaks in plain text. `fail_open` adds
  `--queue-bypass`: traffic then flows unprotected while the daemon is gone.
* Only locally generated and locally delivered packets are seen (OUTPUT/INPUT), never forwarded ones.
* MPTC-IN also queues inbound ICMP "fragmentation needed" / ICMPv6 "Packet Too Big": the daemon lowers the MTU they
  report by the MAC option's size before its kernel learns it (mptcrypt/wire/icmp.py), else a path with a small MTU
  is a black hole for segments the kernel sized to fit exactly.

Gateway mode (`mptcrypt daemon --gateway --lan CIDR ...`) protects traffic the host FORWARDS for the LANs behind it
instead, with two chains in the `mangle` table (the engine is direction-agnostic: outbound = from a LAN host toward
the peer, whatever that peer's gateway is):

    PREROUTING -> MPTC-GW-OUT                       POSTROUTING -> MPTC-GW-IN
      -d LAN -j RETURN            (per LAN)           -m mark --mark INJECT_MARK -j RETURN
      -m addrtype --dst-type LOCAL -j RETURN          -d LAN <ICMP too big> -j NFQUEUE (per LAN)
      -s LAN -p tcp [ports] -j NFQUEUE (per LAN)      -m addrtype --src-type LOCAL -j RETURN
                                                      -s LAN -j RETURN (per LAN)
                                                      -d LAN -p tcp [ports] -j NFQUEUE (per LAN)

PREROUTING sees a LAN host's segment before routing and before a MASQUERADE on the same box rewrites it;
POSTROUTING (mangle runs before nat there) sees segments toward the LAN after conntrack has undone the NAT, so the
engine sees both directions of a connection under the same LAN-side addresses. Traffic between two LANs of the same
gateway, to or from the gateway itself, is left alone. The queue worker takes PREROUTING as outbound.

Rules go in atomically with `iptables-restore --noflush` (all of them or none), the same for ip6tables when it is
installed. Removal deletes the jumps, flushes and deletes the two chains; it is idempotent. Chains found at start
(a daemon killed with -9 leaves them behind) are stale, since the control socket already proved no other daemon runs
in this namespace: they are replaced.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass

import ipaddress

from mptcrypt.constants import CHAIN_IN, CHAIN_OUT, CHAIN_PREFIX, INJECT_MARK
from mptcrypt.errors import KernelFeatureError, MptcryptError

log = logging.getLogger("mptcrypt.iptables")

# Hook chain -> our chain, and the interface flag matching loopback in that direction.
HOOKS = (("OUTPUT", CHAIN_OUT, "-o"), ("INPUT", CHAIN_IN, "-i"))
CHAIN_GW_OUT, CHAIN_GW_IN = CHAIN_PREFIX + "GW-OUT", CHAIN_PREFIX + "GW-IN"
GW_HOOKS = (("PREROUTING", CHAIN_GW_OUT, ""), ("POSTROUTING", CHAIN_GW_IN, ""))  # in the mangle table
MULTIPORT_MAX = 15  # iptables multiport: at most 15 ports per rule, a range counts as two
COMMAND_TIMEOUT = 30.0


@dataclass(frozen=True)
class Family:
    name: str  # "IPv4" / "IPv6"
    save: str
    restore: str
    too_big: str  # the match of the ICMP message reporting a path MTU (RFC 1191 §4, RFC 4443 §3.2)


IPV4 = Family("IPv4", "iptables-save", "iptables-restore", "-p icmp --icmp-type fragmentation-needed")
IPV6 = Family("IPv6", "ip6tables-save", "ip6tables-restore", "-p ipv6-icmp --icmpv6-type packet-too-big")


def multiport_specs(ports: tuple[tuple[int, int], ...]) -> list[str]:
    """((80, 80), (5000, 5100)) -> ['80,5000:5100']; () -> [] (every port). Split at 15 slots per rule."""
    specs: list[str] = []
    items: list[str] = []
    slots = 0
    for lo, hi in ports:
        item, cost = (str(lo), 1) if lo == hi else (f"{lo}:{hi}", 2)
        if slots + cost > MULTIPORT_MAX:
            specs.append(",".join(items))
            items, slots = [], 0
        items.append(item)
        slots += cost
    if items:
        specs.append(",".join(items))
    return specs


def queue_target(queue_num: int, fail_open: bool = False, workers: int = 1) -> str:
    """The NFQUEUE target: one queue, or `workers` consecutive queues balanced by address pair."""
    spread = f"--queue-num {queue_num}" if workers == 1 else f"--queue-balance {queue_num}:{queue_num + workers - 1}"
    return f"-j NFQUEUE {spread}" + (" --queue-bypass" if fail_open else "")


def syn_lane_queue(queue_num: int, workers: int = 1) -> int:
    """The first queue of the SYN lane (SYNs and SYN-ACKs), after the segments' queues queue_num.. of `workers`.
    Both rules balance over the same number of queues with the kernel's one hash of the address pair, so worker k
    gets a flow's SYNs on queue syn_lane_queue + k and its other segments on queue_num + k."""
    return queue_num + workers


# Arriving SYNs beyond this rate are dropped by the kernel before they reach the SYN lane (xt_limit's highest rate):
# building a queue message costs the kernel as much for a SYN the full lane then drops as for one it keeps, and at
# 220k spoofed SYNs/s that work alone took a core from the connections the daemon protects. The daemon takes fewer
# than this in a flood (daemon/lanes.py), and legitimate new connections arrive far below it.
SYN_LANE_RATE = "-m limit --limit 10000/sec --limit-burst 10000"


def _tcp_matches(ports: tuple[tuple[int, int], ...], syn: bool = False) -> list[str]:
    """One match per multiport spec (every port: one match); `syn`: only segments with SYN set (SYN, SYN-ACK)."""
    proto = "-p tcp --tcp-flags SYN SYN" if syn else "-p tcp"
    return [f"{proto} -m multiport --ports {spec}" for spec in multiport_specs(ports)] or [proto]


def rule_lines(queue_num: int, ports: tuple[tuple[int, int], ...] = (), fail_open: bool = False,
               family: Family = IPV4, workers: int = 1) -> list[str]:
    """The `-A`/`-I` lines (iptables-restore syntax) of the daemon's chains and their jumps, in order."""
    target = queue_target(queue_num, fail_open, workers)
    syn_target = queue_target(syn_lane_queue(queue_num, workers), fail_open, workers)
    tcp, syns = _tcp_matches(ports), _tcp_matches(ports, syn=True)
    lines: list[str] = []
    for _hook, chain, lo_flag in HOOKS:
        lines.append(f"-A {chain} -m mark --mark {INJECT_MARK:#x} -j RETURN")
        lines.append(f"-A {chain} {lo_flag} lo -j RETURN")
        if chain == CHAIN_IN:  # only what arrives: the host's own SYNs and SYN-ACKs never queue behind a flood
            lines.extend(f"-A {chain} {match} {SYN_LANE_RATE} {syn_target}" for match in syns)
            lines.extend(f"-A {chain} {match} -j DROP" for match in syns)  # over the rate
        lines.extend(f"-A {chain} {match} {target}" for match in tcp)
        if chain == CHAIN_IN:
            lines.append(f"-A {chain} {family.too_big} {target}")
    lines.extend(f"-I {hook} 1 -j {chain}" for hook, chain, _ in HOOKS)
    return lines


def gateway_rule_lines(queue_num: int, lans: tuple[str, ...], ports: tuple[tuple[int, int], ...] = (),
                       fail_open: bool = False, family: Family = IPV4, workers: int = 1) -> list[str]:
    """The mangle-table lines of gateway mode for the LANs of `family` (see the module docstring)."""
    target = queue_target(queue_num, fail_open, workers)
    syn_target = queue_target(syn_lane_queue(queue_num, workers), fail_open, workers)
    version = 4 if family is IPV4 else 6
    mine = [str(ipaddress.ip_network(lan, strict=False)) for lan in lans
            if ipaddress.ip_network(lan, strict=False).version == version]
    tcp, syns = _tcp_matches(ports), _tcp_matches(ports, syn=True)
    out, into = CHAIN_GW_OUT, CHAIN_GW_IN
    lines = [f"-A {out} -d {lan} -j RETURN" for lan in mine]
    lines.append(f"-A {out} -m addrtype --dst-type LOCAL -j RETURN")
    lines += [f"-A {out} -s {lan} {match} {target}" for lan in mine for match in tcp]
    lines.append(f"-A {into} -m mark --mark {INJECT_MARK:#x} -j RETURN")
    lines += [f"-A {into} -d {lan} {family.too_big} {target}" for lan in mine]
    lines.append(f"-A {into} -m addrtype --src-type LOCAL -j RETURN")
    lines += [f"-A {into} -s {lan} -j RETURN" for lan in mine]
    lines += [f"-A {into} -d {lan} {match} {SYN_LANE_RATE} {syn_target}" for lan in mine for match in syns]
    lines += [f"-A {into} -d {lan} {match} -j DROP" for lan in mine for match in syns]  # over the rate
    lines += [f"-A {into} -d {lan} {match} {target}" for lan in mine for match in tcp]
    lines += [f"-I {hook} 1 -j {chain}" for hook, chain, _ in GW_HOOKS]
    return lines


def install_script(queue_num: int, ports: tuple[tuple[int, int], ...] = (), fail_open: bool = False,
                   family: Family = IPV4, lans: tuple[str, ...] = (), workers: int = 1) -> str:
    """iptables-restore --noflush input creating both chains (empty) and their rules, in one transaction.
    With `lans`: gateway mode's chains in the mangle table."""
    return "\n".join(_declarations(lans) + _body(queue_num, ports, fail_open, family, lans, workers) + ["COMMIT", ""])


def _declarations(lans: tuple[str, ...]) -> list[str]:
    table, hooks = _layout(lans)
    return [f"*{table}"] + [f":{chain} - [0:0]" for _hook, chain, _ in hooks]


def _body(queue_num, ports, fail_open, family, lans, workers=1) -> list[str]:
    return gateway_rule_lines(queue_num, lans, ports, fail_open, family, workers) if lans else \
        rule_lines(queue_num, ports, fail_open, family, workers)


def _layout(lans: tuple[str, ...]) -> tuple[str, tuple]:
    return ("mangle", GW_HOOKS) if lans else ("filter", HOOKS)


def chains_present(save_output: str, hooks: tuple = HOOKS) -> set[str]:
    """Which of our chains an `iptables-save -t TABLE` dump declares."""
    ours = {chain for _hook, chain, _ in hooks}
    return {line[1:].split()[0] for line in save_output.splitlines() if line.startswith(":")} & ours


def removal_script(save_output: str, lans: tuple[str, ...] = ()) -> str | None:
    """iptables-restore --noflush input deleting every jump to our chains, then the chains. None: nothing to do."""
    table, hooks = _layout(lans)
    present = chains_present(save_output, hooks)
    if not present:
        return None
    lines = [f"*{table}"]
    for line in save_output.splitlines():
        parts = line.split()
        # e.g. "-A OUTPUT -j MPTC-OUT" (possibly with counters or extra matches a user added: delete as saved)
        if len(parts) >= 3 and parts[0] == "-A" and parts[1] not in present and _jumps_to(parts, present):
            lines.append("-D" + line[2:])
    lines += [f"-F {chain}" for chain in sorted(present)]
    lines += [f"-X {chain}" for chain in sorted(present)]
    return "\n".join(lines + ["COMMIT", ""])


def replace_script(save_output: str, queue_num: int, ports: tuple[tuple[int, int], ...] = (),
                   fail_open: bool = False, family: Family = IPV4, lans: tuple[str, ...] = (),
                   workers: int = 1) -> str:
    """iptables-restore --noflush input replacing chains already present by ours in ONE transaction: declaring a
    chain flushes it, the old jumps are deleted and the new ones inserted at once. Never a moment without rules
    (a restart or a graceful handover would otherwise let segments of protected connections pass in clear)."""
    _table, hooks = _layout(lans)
    present = chains_present(save_output, hooks)
    deletes = []
    for line in save_output.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "-A" and parts[1] not in present and _jumps_to(parts, present):
            deletes.append("-D" + line[2:])
    body = _body(queue_num, ports, fail_open, family, lans, workers)
    return "\n".join(_declarations(lans) + deletes + body + ["COMMIT", ""])


def _jumps_to(parts: list[str], chains: set[str]) -> bool:
    for i, word in enumerate(parts[:-1]):
        if word in ("-j", "-g", "--jump", "--goto") and parts[i + 1] in chains:
            return True
    return False


class Rules:
    """The daemon's rules in this network namespace for IPv4 and, when ip6tables exists, IPv6."""

    def __init__(self, queue_num: int, ports: tuple[tuple[int, int], ...] = (), fail_open: bool = False,
                 lans: tuple[str, ...] = (), require_ipv6: bool = False, workers: int = 1):
        """`lans`: gateway mode, protect what is forwarded for these networks. `require_ipv6`: a policy requires
        protection, so IPv6 traffic the kernel carries must be intercepted too: without ip6tables the daemon
        refuses to start instead of leaving IPv6 in clear. `workers`: queues queue_num.. balanced (--workers)."""
        self.queue_num = queue_num
        self.workers = workers
        self.ports = ports
        self.fail_open = fail_open
        self.lans = tuple(lans)
        self.table, self.hooks = _layout(self.lans)
        self.families = self._families(require_ipv6)
        self.installed: list[Family] = []

    @staticmethod
    def _families(require_ipv6: bool = False) -> list[Family]:
        if not (shutil.which(IPV4.save) and shutil.which(IPV4.restore)):
            raise KernelFeatureError(
                "iptables is not installed (iptables-save / iptables-restore not found on PATH): "
                "install the iptables package (e.g. `apt install iptables`)"
            )
        families = [IPV4]
        kernel_ipv6 = os.path.exists("/proc/sys/net/ipv6")
        if shutil.which(IPV6.save) and shutil.which(IPV6.restore) and kernel_ipv6:
            families.append(IPV6)
        elif kernel_ipv6 and require_ipv6:
            raise KernelFeatureError(
                "policy `required` but ip6tables-save / ip6tables-restore are not on PATH: IPv6 connections would "
                "leave in clear; install ip6tables (the iptables package) or disable IPv6"
            )
        else:
            log.warning("ip6tables or kernel IPv6 support missing: IPv6 traffic is not intercepted")
        return families

    def install(self) -> None:
        """Replace stale chains if any, then add ours atomically per family. On failure nothing of ours is left."""
        try:
            for fam in self.families:
                save = _run([fam.save, "-t", self.table], fam)
                present = chains_present(save, self.hooks)
                if present:
                    log.warning(
                        "replacing stale %s chains %s left by a daemon that did not exit cleanly (or handed over)",
                        fam.name,
                        ", ".join(sorted(present)),
                    )
                    _run([fam.restore, "-w", "--noflush"], fam,
                         replace_script(save, self.queue_num, self.ports, self.fail_open, fam, self.lans,
                                        self.workers))
                else:
                    _run([fam.restore, "-w", "--noflush"], fam,
                         install_script(self.queue_num, self.ports, self.fail_open, fam, self.lans, self.workers))
                self.installed.append(fam)
        except BaseException:
            try:
                self.remove()
            except MptcryptError as exc:  # report the install failure, not this one
                log.error("could not remove partly installed rules: %s", exc)
            raise

    def remove(self) -> None:
        """Delete the jumps and the chains in every family. Idempotent; tries every family even if one fails.
        `installed` is emptied only when every family is clean."""
        errors = []
        for fam in self.families:
            try:
                script = removal_script(_run([fam.save, "-t", self.table], fam), self.lans)
                if script is not None:
                    _run([fam.restore, "-w", "--noflush"], fam, script)
            except MptcryptError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        self.installed.clear()

    def present(self) -> dict[str, set[str]]:
        """Family name -> which of our chains exist now (for tests and diagnostics)."""
        return {fam.name: chains_present(_run([fam.save, "-t", self.table], fam), self.hooks)
                for fam in self.families}


def _run(argv: list[str], fam: Family, stdin: str | None = None) -> str:
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    except FileNotFoundError:
        raise KernelFeatureError(f"{argv[0]} not found: install the iptables package") from None
    except subprocess.TimeoutExpired:
        raise MptcryptError(f"{argv[0]} did not finish within {COMMAND_TIMEOUT:.0f} s (xtables lock held?)") from None
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip()
        low = err.lower()
        if "nfqueue" in low or "no chain/target/match" in low or "couldn't load target" in low:
            raise KernelFeatureError(
                f"the kernel has no NFQUEUE target for {fam.name} ({argv[0]}: {err}); load it with "
                "`modprobe xt_NFQUEUE nfnetlink_queue` or use a kernel with CONFIG_NETFILTER_XT_TARGET_NFQUEUE"
            )
        if "permission denied" in low or "operation not permitted" in low:
            raise MptcryptError(f"{argv[0]} was refused ({err}): the daemon needs root (CAP_NET_ADMIN)")
        raise MptcryptError(f"{argv[0]} failed (exit {proc.returncode}): {err}")
    return proc.stdout
