"""`Net`: build a topology plan on the machine, change it at run time, tear it down.

Every host and switch is a named namespace `mptc-<name>`; links are veth pairs created with both ends
already in their namespaces; switches are Linux bridges `mptc-<switch>` in their own namespace. One
pyroute2 handle is kept per namespace while the network is up. Nothing is created in the root
namespace, so deleting the namespaces removes everything: that is the whole teardown, and what
`mptcrypt topo down` / `clean` do from another process.

A link given delay/jitter/reorder/duplicate gets netem below its shaper where the kernel has netem; without
netem it becomes two veth pairs with a delay line between them, a forwarding process in its own namespace
`mptc-link-<node1>-<intf1>` (mptcrypt.topo.delayline), killed by PID at teardown and with its namespace after a crash.
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import socket
import struct
import subprocess
import time
from typing import Any, Sequence

from mptcrypt.errors import AlreadyRunningError, ConfigError, KernelFeatureError, MptcryptError
from mptcrypt.topo import netns
from mptcrypt.topo.delayline import DEFAULT_LIMIT, INTF_A, INTF_B, DelayLine, LineParams
from mptcrypt.topo.spec import (
    SHAPING_KEYS,
    Endpoint,
    Intf,
    NetPlan,
    NodePlan,
    apply_shaping,
    early_sysctls,
    loss_rules,
    loss_script,
    parse_ipv4,
    parse_ipv4_cidr,
    parse_mtu,
    plan_topology,
    policy_tables,
    sysctl_script,
)
from mptcrypt.topo.state import STATE_FILE, STATE_VERSION, TopoLock, read_state, remove_state, write_state

DEFAULT_LOCK_TIMEOUT = 120.0  # a second test run waits this long for the first one's topology to go
SCOPE_LINK = 253
TC_ROOT = {"root": True}
TBF_LATENCY = "50ms"  # queue bound when max_queue_size is not given
MTU_FRAME = 1514
DELAY_LINE_MTU = 65535  # the delay line's own ends never limit the frame size: the hosts' MTUs do
ENOENT, EEXIST, ESRCH, EADDRNOTAVAIL = 2, 17, 3, 99

_KEEP = object()


def _nl_code(exc: BaseException) -> int | None:
    return getattr(exc, "code", None)


class Node:
    """A host or switch of a running `Net`: its namespace, handle and a way to run things in it."""

    def __init__(self, net: "Net", plan: NodePlan) -> None:
        self.net = net
        self.plan = plan
        self.name = plan.name
        self.ns = plan.ns
        self.ipr: Any = None  # pyroute2 IPRoute bound to the namespace while the network is up
        self._mptcp: Any = None

    def __repr__(self) -> str:
        return f"<{'Switch' if self.is_switch else 'Host'} {self.name} ns={self.ns}>"

    @property
    def is_switch(self) -> bool:
        return self.plan.is_switch

    def intfNames(self) -> list[str]:
        return self.plan.intf_names()

    def IP(self, intf: str | None = None) -> str | None:
        """Address (without prefix) of `intf`, or of the first addressed interface."""
        intfs = [self.plan.intf(intf)] if intf else self.plan.addressed()
        return str(intfs[0].addr.ip) if intfs and intfs[0].addr else None

    def ifindex(self, intf: str) -> int:
        found = self.ipr.link_lookup(ifname=intf)
        if not found:
            raise ConfigError(f"{self.name} has no interface {intf!r} (is the network up?)")
        return found[0]

    # --- running things in the namespace ---------------------------------------------------------
    def _argv(self, args: str | Sequence[str]) -> list[str]:
        argv = ["sh", "-c", args] if isinstance(args, str) else [str(a) for a in args]
        return netns.exec_argv(self.ns, argv)

    def run(
        self, args: str | Sequence[str], *, check: bool = True, timeout: float | None = 60.0, input: str | None = None
    ) -> subprocess.CompletedProcess:
        """Run a command (a shell string or an argv list) to completion; text output captured."""
        return subprocess.run(
            self._argv(args),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def cmd(self, *args: Any, timeout: float | None = 60.0) -> str:
        """Mininet's `cmd`: run in a shell, return stdout and stderr together, never raise on failure."""
        if len(args) == 1 and isinstance(args[0], (list, tuple)):
            argv: str | list[str] = [str(a) for a in args[0]]
        else:
            argv = " ".join(str(a) for a in args)
        proc = subprocess.run(
            self._argv(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, timeout=timeout, check=False,
        )
        return proc.stdout

    def popen(self, args: str | Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """Start a process in the namespace. The network kills it when it stops."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(self._argv(args), **kwargs)
        self.net._procs.append(proc)
        return proc

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0) -> socket.socket:
        """A socket of this process that lives in the namespace (e.g. proto=socket.IPPROTO_MPTCP)."""
        from pyroute2 import netns as pr_netns

        sock = pr_netns.create_socket(self.ns, family, type, proto)
        self.net._sockets.append(sock)
        return sock

    @property
    def mptcp(self) -> Any:
        """pyroute2 MPTCP generic-netlink handle of the namespace (limits, endpoints)."""
        if self._mptcp is None:
            from pyroute2 import MPTCP

            self._mptcp = MPTCP(netns=self.ns)
        return self._mptcp

    def _close(self) -> None:
        for handle in (self._mptcp, self.ipr):
            if handle is not None:
                try:
                    handle.close()
                except Exception:
                    pass
        self._mptcp = None
        self.ipr = None


class Net:
    """An emulated network built from a `Topo`. Use as a context manager, or `start()` / `stop()`.

    Only one `Net` is up per machine at a time (its namespaces are named after its hosts); a second
    `start()` waits up to `lock_timeout` seconds for the first to stop. `state_file` records what was
    made, for `mptcrypt topo down` from another process; None keeps no record.
    """

    _active: "Net | None" = None  # the Net started by this process, if any

    def __init__(
        self,
        topo: Any,
        *,
        state_file: str | None = STATE_FILE,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        source: dict[str, Any] | None = None,
    ) -> None:
        self.topo = topo
        self.plan: NetPlan = plan_topology(topo)
        self.nodes: dict[str, Node] = {name: Node(self, p) for name, p in self.plan.nodes.items()}
        self.state_file = state_file
        self.lock_timeout = lock_timeout
        self.source = dict(source or {})  # what `topo up` loaded: file, topo name, args (for the record)
        self._lock = TopoLock()
        self._created: list[str] = []
        self._procs: list[subprocess.Popen] = []
        self._sockets: list[socket.socket] = []
        self._loss_nodes: set[str] = set()  # nodes whose MPTC-LOSS chains exist
        self._qdisc: set[tuple[str, str]] = set()  # (node, intf) with a root qdisc of ours
        self._netem: bool | None = None  # the kernel has netem (probed when a link asks for delay)
        self._lines: dict[tuple[str, str], tuple[DelayLine, str]] = {}  # (node, intf) -> its line, direction sent
        self.started = False

    # --- access ------------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            raise KeyError(f"no node {name!r}; nodes: {', '.join(self.nodes)}") from None

    def __contains__(self, name: str) -> bool:
        return name in self.nodes

    @property
    def hosts(self) -> list[Node]:
        return [n for n in self.nodes.values() if not n.is_switch]

    @property
    def switches(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.is_switch]

    @property
    def namespaces(self) -> list[str]:
        return self.plan.namespaces()

    # --- lifecycle -----------------------------------------------------------------------------------
    def __enter__(self) -> "Net":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> "Net":
        if self.started:
            return self
        netns.require_root("building a topology")
        netns.require_tools()
        if Net._active is not None:
            raise AlreadyRunningError(
                f"this process already has a topology up ({', '.join(Net._active.namespaces)}): stop it first"
            )
        self._acquire()
        try:
            self._save_state("building")
            self._build()
            self._save_state("up")
        except BaseException:
            self._teardown()
            self._lock.release()
            raise
        self.started = True
        Net._active = self
        return self

    def stop(self) -> None:
        """Kill what runs in the namespaces, delete them, forget the state. Safe to call twice."""
        try:
            self._teardown()
        finally:
            self.started = False
            if Net._active is self:
                Net._active = None
            self._lock.release()

    def detach(self) -> None:
        """Leave the network up for other processes (`mptcrypt topo up`): close handles, release the lock.
        The state file stays, marked detached, until `mptcrypt topo down`."""
        if self.started:
            self._save_state("up", detached=True)
        self._close_handles()
        self._sockets.clear()
        self._procs.clear()
        self.started = False
        if Net._active is self:
            Net._active = None
        self._lock.release()

    def _acquire(self) -> None:
        """Take the lock, waiting up to lock_timeout, also for a topology that `topo up` left up to be
        taken down (the lock is let go while waiting, so that `topo down` can get it)."""
        deadline = time.monotonic() + self.lock_timeout
        while True:
            self._lock.acquire(max(0.0, deadline - time.monotonic()))
            busy = self._busy()
            if busy is None:
                return
            message, worth_waiting = busy
            self._lock.release()
            if not worth_waiting or time.monotonic() >= deadline:
                raise AlreadyRunningError(message)
            time.sleep(0.25)

    def _busy(self) -> tuple[str, bool] | None:
        """Why this network cannot be built now (message, whether waiting may help), or None.

        A record left by a process that died with its network up (a crash, SIGKILL) is cleaned up here:
        its namespaces are the ones that process made, and we hold the lock."""
        record = self.state_file or STATE_FILE  # read even when not recording: `topo up` may own the names
        state = read_state(record)
        if state is not None:
            recorded = [ns for ns in state.get("namespaces", []) if ns.startswith(netns.NAME_PREFIX)]
            alive = [ns for ns in recorded if netns.exists(ns)]
            owner = state.get("pid")
            if alive and not state.get("detached") and isinstance(owner, int) and not _pid_alive(owner):
                for ns in alive:
                    netns.delete(ns)
                alive = []
            if alive:
                what = state.get("file") or "a topology"
                return (f"{what} is already up ({', '.join(alive)}; made by pid {owner}): "
                        "run `mptcrypt topo down` first", True)
            remove_state(record)
        taken = [ns for ns in self.namespaces if netns.exists(ns)]
        if taken:
            return (f"namespace(s) {', '.join(taken)} already exist, with no record of who made them "
                    "(left over from a crash?): `mptcrypt topo clean` removes every mptc- namespace", False)
        return None

    def _save_state(self, status: str, detached: bool = False) -> None:
        if not self.state_file:
            return
        state = {
            "version": STATE_VERSION,
            "status": status,
            "detached": detached,
            "pid": os.getpid(),
            "created": time.time(),
            "namespaces": self.namespaces,
            "hosts": {
                h.name: {"ns": h.ns, "intfs": {i.name: str(i.addr) if i.addr else None for i in h.intfs}}
                for h in self.plan.hosts
            },
            "switches": {s.name: {"ns": s.ns, "bridge": s.bridge, "hub": s.hub} for s in self.plan.switches},
            "links": [[lk.node1, lk.intf1, lk.node2, lk.intf2] for lk in self.plan.links],
            **self.source,
        }
        write_state(state, self.state_file)

    def _close_handles(self) -> None:
        for sock in self._sockets:
            try:
                sock.close()
            except OSError:
                pass
        for node in self.nodes.values():
            node._close()

    def _teardown(self) -> None:
        self._close_handles()
        self._sockets.clear()
        for proc in self._procs:
            if proc.poll() is None:
                netns.kill_pids([proc.pid])
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        self._procs.clear()
        errors = []
        for ns in reversed(self._created):
            try:
                netns.delete(ns)
            except OSError as exc:
                errors.append(f"{ns}: {exc}")
        self._created.clear()
        for line, _direction in self._lines.values():
            for pipe in (line.proc.stdin, line.proc.stdout, line.proc.stderr):
                pipe.close()
        self._lines.clear()
        self._loss_nodes.clear()
        self._qdisc.clear()
        if self.state_file:
            state = read_state(self.state_file)
            if state is not None and state.get("pid") == os.getpid():
                remove_state(self.state_file)
        if errors:
            raise MptcryptError("teardown left namespaces behind: " + "; ".join(errors) + " (try `mptcrypt topo clean`)")

    # --- build -----------------------------------------------------------------------------------------
    def _build(self) -> None:
        from pyroute2 import IPRoute

        for node in self.nodes.values():
            self._created.append(node.ns)
            netns.create(node.ns)
        for node in self.nodes.values():
            node.ipr = IPRoute(netns=node.ns)
        lined = []
        if any(lk.delayed for lk in self.plan.links):
            self._netem = self._probe_netem(next(iter(self.nodes.values())))
            lined = [] if self._netem else [lk for lk in self.plan.links if lk.delayed]
        for lk in lined:
            self._created.append(lk.delay_ns)
            netns.create(lk.delay_ns)
        early = {n.ns: sysctl_script(early_sysctls(n.plan)) for n in self.nodes.values() if early_sysctls(n.plan)}
        no_v6 = {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}
        early.update({lk.delay_ns: sysctl_script(no_v6) for lk in lined})  # a delay line sends nothing of its own
        netns.run_scripts(early)
        for node in self.nodes.values():
            node.ipr.link("set", index=node.ifindex("lo"), state="up")
            if node.is_switch:
                self._make_bridge(node)
        with IPRoute() as root:
            for lk in self.plan.links:
                ns1, ns2 = self.nodes[lk.node1].ns, self.nodes[lk.node2].ns
                if lk in lined:
                    for ifname, ns, end in ((lk.intf1, ns1, INTF_A), (lk.intf2, ns2, INTF_B)):
                        self._nl(
                            f"creating veth {ifname} <-> the delay line {lk.delay_ns}:{end}",
                            root.link, "add", ifname=ifname, kind="veth", net_ns_fd=ns,
                            peer={"ifname": end, "net_ns_fd": lk.delay_ns},
                        )
                    continue
                self._nl(
                    f"creating veth {lk.node1}:{lk.intf1} <-> {lk.node2}:{lk.intf2}",
                    root.link, "add", ifname=lk.intf1, kind="veth", net_ns_fd=ns1,
                    peer={"ifname": lk.intf2, "net_ns_fd": ns2},
                )
        self._start_delay_lines(lined)
        for node in self.nodes.values():
            for intf in node.plan.intfs:
                self._config_intf(node, intf)
        for node in self.hosts:
            self._apply_routes(node)
        late = {n.ns: sysctl_script(n.plan.sysctls) for n in self.hosts if n.plan.sysctls}
        netns.run_scripts(late)
        commands = {n.ns: "set -e\n" + "\n".join(n.plan.commands) + "\n" for n in self.hosts if n.plan.commands}
        for node in self.nodes.values():
            for intf in node.plan.intfs:
                if intf.shaping.bw is not None or (intf.shaping.needs_netem and self._netem):
                    self._apply_qdisc(node, intf)
        self._apply_loss()
        for node in self.hosts:
            self._apply_mptcp(node)
        netns.run_scripts(commands)  # last: a host's commands (NAT rules, routes) see the finished network

    def _probe_netem(self, node: Node) -> bool:
        """Whether this kernel has netem: add one to the namespace's loopback and take it away again."""
        idx = node.ifindex("lo")
        try:
            node.ipr.tc("add", "netem", idx, handle="1:", delay=0)
        except Exception:
            return False
        try:
            node.ipr.tc("del", index=idx, **TC_ROOT)
        except Exception:
            pass
        return True

    def _start_delay_lines(self, links: list) -> None:
        """Bring up each link's delay-line namespace and start its process; all at once, then wait for them."""
        from pyroute2 import IPRoute

        started = []
        for lk in links:
            with IPRoute(netns=lk.delay_ns) as ipr:
                for end in (INTF_A, INTF_B):
                    idx = ipr.link_lookup(ifname=end)[0]
                    self._nl(f"MTU of {lk.delay_ns}:{end}", ipr.link, "set", index=idx, mtu=DELAY_LINE_MTU)
                    ipr.link("set", index=idx, state="up")
            line = DelayLine(lk.delay_ns, netns.exec_argv(lk.delay_ns, []))
            self._procs.append(line.proc)
            self._lines[(lk.node1, lk.intf1)] = (line, "ab")  # what node1 sends goes a -> b
            self._lines[(lk.node2, lk.intf2)] = (line, "ba")
            started.append(lk)
        for lk in started:
            line, _ = self._lines[(lk.node1, lk.intf1)]
            try:
                line.wait_ready()
            except (OSError, TimeoutError) as exc:
                raise KernelFeatureError(f"the delay line of {lk.node1}:{lk.intf1} did not start: {exc}") from exc
            for name, ifname in ((lk.node1, lk.intf1), (lk.node2, lk.intf2)):
                self._set_line(name, self.plan.node(name).intf(ifname))

    def _set_line(self, node: str, intf: Intf) -> None:
        line, direction = self._lines[(node, intf.name)]
        sh = intf.shaping
        line.set(direction, LineParams(delay_us=sh.delay_us, jitter_us=sh.jitter_us, reorder=sh.reorder,
                                       duplicate=sh.duplicate, limit=sh.max_queue_size or DEFAULT_LIMIT))

    def delay_line_stats(self, node: str, intf: str) -> dict[str, int] | None:
        """Counters of the delay line carrying what `node`'s `intf` sends (forwarded, dropped, reordered,
        duplicated, held, ...); None when that link has none (no delay asked, or netem does the delay)."""
        found = self._lines.get((node, intf))
        if found is None:
            return None
        line, direction = found
        return line.stats()[direction]

    def _nl(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MptcryptError:
            raise
        except Exception as exc:
            raise KernelFeatureError(f"{what} failed: {exc}") from exc

    def _make_bridge(self, node: Node) -> None:
        opts = {"br_stp_state": 0, "br_forward_delay": 0}
        if node.plan.hub:
            opts["br_ageing_time"] = 0  # forget every MAC at once: every frame floods to every port
        self._nl(f"creating bridge {node.plan.bridge}", node.ipr.link, "add", ifname=node.plan.bridge, kind="bridge", **opts)
        node.ipr.link("set", index=node.ifindex(node.plan.bridge), state="up")

    def _config_intf(self, node: Node, intf: Intf) -> None:
        ipr = node.ipr
        idx = node.ifindex(intf.name)
        if intf.mac:
            self._nl(f"setting MAC of {node.name}:{intf.name}", ipr.link, "set", index=idx, address=intf.mac)
        if node.is_switch:
            ipr.link("set", index=idx, master=node.ifindex(node.plan.bridge))
            if node.plan.hub:
                self._nl(f"turning learning off on {node.name}:{intf.name}", ipr.brport, "set", index=idx, learning=0)
        if intf.mtu is not None:
            self._nl(f"MTU {intf.mtu} on {node.name}:{intf.name}", ipr.link, "set", index=idx, mtu=intf.mtu)
        if intf.addr is not None:
            ipr.addr("add", index=idx, address=str(intf.addr.ip), prefixlen=intf.addr.network.prefixlen)
        if intf.addr6 is not None:
            self._nl(f"IPv6 address on {node.name}:{intf.name}", ipr.addr, "add", index=idx,
                     address=str(intf.addr6.ip), prefixlen=intf.addr6.network.prefixlen)
        ipr.link("set", index=idx, state="up" if intf.up else "down")

    def _apply_routes(self, node: Node) -> None:
        """(Re)install the host's per-path tables, rules and default route; idempotent."""
        ipr = node.ipr
        up = {i.name for i in node.plan.intfs if i.up}
        for pt in policy_tables(node.plan):
            try:
                ipr.rule("add", table=pt.table, priority=pt.pref, src=str(pt.src), src_len=pt.src.max_prefixlen,
                         family=_family(pt.src))
            except Exception as exc:
                if _nl_code(exc) != EEXIST:
                    raise KernelFeatureError(f"ip rule from {pt.src} table {pt.table} on {node.name}: {exc}") from exc
            if pt.dev not in up:
                continue  # routes through a down interface come back with link_up
            idx = node.ifindex(pt.dev)
            self._nl(
                f"route {pt.subnet} table {pt.table} on {node.name}", ipr.route, "replace",
                dst=str(pt.subnet), oif=idx, prefsrc=str(pt.src), scope=SCOPE_LINK, table=pt.table,
            )
            if pt.gw is not None:
                self._nl(
                    f"default via {pt.gw} table {pt.table} on {node.name}", ipr.route, "replace",
                    dst=pt.default_dst, gateway=str(pt.gw), oif=idx, table=pt.table,
                )
        if node.plan.default_route is not None:
            gw, dev = node.plan.default_route
            if dev in up:
                kw: dict[str, Any] = {"gateway": str(gw)} if gw is not None else {"scope": SCOPE_LINK}
                self._nl(f"default route on {node.name}", ipr.route, "replace", dst="0.0.0.0/0",
                         oif=node.ifindex(dev), **kw)
        gw6 = [i for i in node.plan.intfs if i.gw6 is not None and i.name in up]
        if gw6:  # the main table's IPv6 default: the lowest-numbered interface with a gw6
            self._nl(f"IPv6 default route on {node.name}", ipr.route, "replace", dst="::/0",
                     gateway=str(gw6[0].gw6), oif=node.ifindex(gw6[0].name))

    def _apply_qdisc(self, node: Node, intf: Intf) -> None:
        """Egress shaping of one interface: tbf (or htb) for bw, netem below it for delay/jitter."""
        ipr = node.ipr
        idx = node.ifindex(intf.name)
        sh = intf.shaping
        key = (node.name, intf.name)
        if key in self._qdisc:
            try:
                ipr.tc("del", index=idx, **TC_ROOT)
            except Exception as exc:
                if _nl_code(exc) not in (ENOENT, 22):
                    raise
            self._qdisc.discard(key)
        netem = sh.needs_netem and bool(self._netem)  # else the link's delay line does it
        if sh.bw is None and not netem:
            return
        where = f"{node.name}:{intf.name}"
        parent: dict[str, Any] = {}
        if sh.bw is not None:
            rate = f"{sh.bw * 1000:.0f}kbit"
            burst = max(15_000, int(sh.bw * 1e6 / 8 * 0.002))  # 2 ms of traffic, at least 10 frames
            if sh.use_htb:
                self._nl(f"htb on {where}", ipr.tc, "add", "htb", idx, handle="1:", default=1)
                self._qdisc.add(key)
                self._nl(f"htb class on {where}", ipr.tc, "add-class", "htb", idx, handle="1:1", parent="1:",
                         rate=rate, burst=burst)
            else:
                limit = {"limit": sh.max_queue_size * MTU_FRAME} if sh.max_queue_size else {"latency": TBF_LATENCY}
                self._nl(f"tbf on {where}", ipr.tc, "add", "tbf", idx, handle="1:", rate=rate, burst=burst, **limit)
                self._qdisc.add(key)
            parent = {"parent": 0x10001}
        if netem:
            opts: dict[str, Any] = {"delay": sh.delay_us, "jitter": sh.jitter_us}
            if sh.reorder:
                opts["reorder"] = sh.reorder
            if sh.duplicate:
                opts["duplicate"] = sh.duplicate
            if sh.max_queue_size:
                opts["limit"] = sh.max_queue_size
            handle = "10:" if parent else "1:"
            try:
                ipr.tc("add", "netem", idx, handle=handle, **parent, **opts)
            except Exception as exc:
                if _nl_code(exc) == ENOENT:
                    raise KernelFeatureError(
                        f"{where} asks for delay/jitter, but this kernel has no netem qdisc "
                        "(CONFIG_NET_SCH_NETEM): remove delay/jitter from the topology, or use a kernel with netem"
                    ) from exc
                raise KernelFeatureError(f"netem on {where} failed: {exc}") from exc
            self._qdisc.add(key)

    def _apply_loss(self, only: set[str] | None = None) -> None:
        rules = loss_rules(self.plan)
        targets = set(rules) | self._loss_nodes
        if only is not None:
            targets &= only
        scripts = {
            self.nodes[n].ns: loss_script(rules.get(n, []), ipv6=self.plan.nodes[n].ipv6) for n in sorted(targets)
        }
        netns.run_scripts(scripts)
        self._loss_nodes |= set(rules) & targets

    def _apply_mptcp(self, node: Node) -> None:
        settings = node.plan.mptcp
        if settings is None or not settings.enabled:
            return
        if settings.limits:
            self._nl(f"MPTCP limits on {node.name}", node.mptcp.limits, "set", **settings.limits)
        for ep in settings.endpoints:
            self._add_endpoint(node, ep)

    def _add_endpoint(self, node: Node, ep: Endpoint) -> None:
        # pyroute2: `addr` means IPv4 (an IPv6 string there becomes a bogus IPv4 address), `addr6` IPv6
        kw: dict[str, Any] = {"addr6" if ":" in ep.addr else "addr": ep.addr, "flags": ep.flags}
        if ep.id is not None:
            kw["id"] = ep.id
        if ep.port is not None:
            kw["port"] = ep.port
        if ep.dev is not None:
            # pyroute2 0.9 types IF_IDX as "hex": it takes the raw little-endian s32, not an int.
            kw["if_idx"] = struct.pack("<i", node.ifindex(ep.dev))
        self._nl(f"MPTCP endpoint {ep.addr} on {node.name}", node.mptcp.endpoint, "add", **kw)

    def mptcp_endpoints(self, host: str) -> list[dict[str, Any]]:
        """The kernel's endpoints in `host`: [{'id':, 'addr':, 'flags':, 'dev_index':}, ...]."""
        out = []
        for msg in self[host].mptcp.endpoint("show"):
            attrs = dict(msg.get_attr("MPTCP_PM_ATTR_ADDR")["attrs"])
            idx = attrs.get("MPTCP_PM_ADDR_ATTR_IF_IDX")
            if isinstance(idx, str):  # "02:00:00:00": the raw bytes pyroute2 shows as hex
                idx = struct.unpack("<i", bytes.fromhex(idx.replace(":", "")))[0]
            out.append({
                "id": attrs.get("MPTCP_PM_ADDR_ATTR_ID"),
                "addr": attrs.get("MPTCP_PM_ADDR_ATTR_ADDR4") or attrs.get("MPTCP_PM_ADDR_ATTR_ADDR6"),
                "flags": attrs.get("MPTCP_PM_ADDR_ATTR_FLAGS", 0),
                "port": attrs.get("MPTCP_PM_ADDR_ATTR_PORT", 0),
                "dev_index": idx,
            })
        return out

    # --- run-time changes (handover scripts) ---------------------------------------------------------
    def _require_up(self) -> None:
        if not self.started:
            raise ConfigError("the network is not up: call start() (or use `with Net(topo) as net:`)")

    def _ends(self, a: str, b: str, intf: str | None) -> list[tuple[Node, Intf]]:
        ends = []
        for lk in self.plan.find_links(a, b, intf):
            for name, ifname in ((lk.node1, lk.intf1), (lk.node2, lk.intf2)):
                ends.append((self.nodes[name], self.plan.node(name).intf(ifname)))
        return ends

    def link_down(self, a: str, b: str, intf: str | None = None) -> None:
        """Take the link(s) between a and b down, both ends (Mininet's configLinkStatus(a, b, 'down')).
        `intf`, an interface name on either end, picks one link when several join a and b."""
        self._set_link_state(a, b, intf, up=False)

    def link_up(self, a: str, b: str, intf: str | None = None) -> None:
        """Bring the link(s) back; routes that went with the interfaces are reinstalled."""
        self._set_link_state(a, b, intf, up=True)

    def _set_link_state(self, a: str, b: str, intf: str | None, up: bool) -> None:
        self._require_up()
        ends = self._ends(a, b, intf)
        for node, i in ends:
            i.up = up
            node.ipr.link("set", index=node.ifindex(i.name), state="up" if up else "down")
        if up:
            for node in {n.name: n for n, _ in ends if not n.is_switch}.values():
                self._apply_routes(node)

    def set_intf(self, node: str, intf: str, **params: Any) -> None:
        """Change what one interface sends through: bw (Mbit/s, None = unlimited), loss (%), delay,
        jitter, max_queue_size, use_htb."""
        self._require_up()
        unknown = set(params) - SHAPING_KEYS
        if unknown:
            raise ConfigError(f"set_intf: unsupported option(s) {', '.join(sorted(unknown))}; "
                              f"supported: {', '.join(sorted(SHAPING_KEYS))}")
        n = self[node]
        i = n.plan.intf(intf)
        old = i.shaping
        new = apply_shaping(type(old)(**vars(old)), params, f"{node}:{intf}")
        if new.loss and self.plan.nodes[i.peer_node].is_switch and n.is_switch:
            raise ConfigError(f"loss on the switch-to-switch link {node}<->{i.peer_node} is not supported")
        line_keys = {"delay_us", "jitter_us", "reorder", "duplicate"}
        line = (node, intf) in self._lines
        if not line and not self._netem and any(getattr(old, k) != getattr(new, k) for k in line_keys):
            raise ConfigError(
                f"{node}:{intf} has no delay line, and this kernel no netem: give the link delay (delay='0ms' "
                "will do) in addLink so that it gets one, then change it at run time"
            )
        skip = {"loss"} | (line_keys if line else set())
        qdisc_changed = any(getattr(old, k) != getattr(new, k) for k in vars(old) if k not in skip)
        line_changed = line and any(getattr(old, k) != getattr(new, k) for k in line_keys | {"max_queue_size"})
        i.shaping = new
        try:
            if line_changed:
                self._set_line(node, i)
            if qdisc_changed:
                self._apply_qdisc(n, i)
            if new.loss != old.loss:
                peer = self.plan.peer(i)
                self._apply_loss(only={peer.node, node})
        except BaseException:
            i.shaping = old
            raise

    def set_link(self, a: str, b: str, intf: str | None = None, **params: Any) -> None:
        """`set_intf` on both ends of the link(s) between a and b: bw=, loss=, delay=, jitter=, ..."""
        for node, i in self._ends(a, b, intf):
            self.set_intf(node.name, i.name, **params)

    def set_mtu(self, node: str, intf: str, mtu: int) -> None:
        """Change one interface's MTU at run time (a path whose MTU drops mid-transfer)."""
        self._require_up()
        n = self[node]
        i = n.plan.intf(intf)
        i.mtu = parse_mtu(mtu, f"set_mtu {node}:{intf}")
        self._nl(f"MTU {mtu} on {node}:{intf}", n.ipr.link, "set", index=n.ifindex(intf), mtu=i.mtu)

    def set_addr(self, host: str, intf: str, cidr: str | None, gw: Any = _KEEP) -> None:
        """Give `intf` a new address (a mobile moving to another network), or none (cidr=None).

        Per-path table and rule follow the address; MPTCP endpoints on the old address move to the new
        one with the same id and flags. `gw`: the interface's new per-path gateway (default: kept if it
        is on the new subnet, else none)."""
        self._require_up()
        n = self[host]
        if n.is_switch:
            raise ConfigError(f"{host} is a switch: its ports have no addresses")
        i = n.plan.intf(intf)
        new = parse_ipv4_cidr(cidr, f"set_addr {host}:{intf}") if cidr is not None else None
        new_gw = i.gw if gw is _KEEP else (parse_ipv4(gw, f"set_addr {host}:{intf}: gw") if gw else None)
        if new_gw is not None and (new is None or new_gw not in new.network):
            if gw is not _KEEP:
                raise ConfigError(f"set_addr {host}:{intf}: gw {new_gw} is not in {new}")
            new_gw = None
        old = i.addr
        idx = n.ifindex(intf)
        old_tables = {pt.table: pt for pt in policy_tables(n.plan)}
        if old is not None:
            try:
                n.ipr.addr("del", index=idx, address=str(old.ip), prefixlen=old.network.prefixlen)
            except Exception as exc:
                if _nl_code(exc) != EADDRNOTAVAIL:
                    raise
        for pt in old_tables.values():  # tables of every interface: multihoming may have changed
            try:
                n.ipr.rule("del", table=pt.table, priority=pt.pref, src=str(pt.src), src_len=pt.src.max_prefixlen,
                           family=_family(pt.src))
            except Exception as exc:
                if _nl_code(exc) not in (ENOENT, ESRCH):
                    raise
            n.ipr.flush_routes(table=pt.table)
        i.addr, i.gw = new, new_gw
        if new is not None:
            n.ipr.addr("add", index=idx, address=str(new.ip), prefixlen=new.network.prefixlen)
        if n.plan.default_route is not None and n.plan.default_route[1] == intf:
            dgw = n.plan.default_route[0]
            if dgw is not None and (new is None or dgw not in new.network):
                n.plan.default_route = None  # its gateway is no longer on-link
        self._apply_routes(n)
        self._move_endpoints(n, old, new)
        self._save_state("up")

    def _move_endpoints(self, n: Node, old: ipaddress.IPv4Interface | None, new: ipaddress.IPv4Interface | None) -> None:
        settings = n.plan.mptcp
        if old is None or settings is None or not settings.enabled:
            return
        moved = [ep for ep in settings.endpoints if ep.addr == str(old.ip)]
        if not moved:
            return
        current = {e["addr"]: e for e in self.mptcp_endpoints(n.name)}
        for ep in moved:
            old_id = current.get(ep.addr, {}).get("id")
            if old_id is not None:
                n.mptcp.endpoint("del", id=old_id, addr=ep.addr)
            if new is None:
                settings.endpoints.remove(ep)
                continue
            ep.addr = str(new.ip)
            if ep.id is None:
                ep.id = old_id  # keep the id the peer knows this path by
            self._add_endpoint(n, ep)


def _family(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    return socket.AF_INET if addr.version == 4 else socket.AF_INET6


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_active() -> None:
    net = Net._active
    if net is not None:
        try:
            net.stop()
        except Exception:
            pass


atexit.register(_stop_active)
