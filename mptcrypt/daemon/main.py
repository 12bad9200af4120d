"""The daemon: start-up order, the one select loop, clean shutdown; and helpers to run one in a namespace.

Start-up, each step only once the previous one worked::

    root check -> control socket (a second daemon stops here) -> engine -> raw socket -> NFQUEUE bound
    -> iptables rules LAST (no packet is queued before someone listens) -> "mptcrypt daemon ready (...)"

SIGHUP reloads the configuration (policy, rules, ciphers, limits; the file is read again and checked whole, a bad
one keeps the running configuration and logs why). Ports, queue number and fail-open need a restart.

Shutdown (SIGTERM, SIGINT, or an exception): rules removed FIRST, so nothing new is queued to a process about to
go; the packets already queued are handled; then the queue is unbound, the sockets closed. The rules are removed in
a `finally`, so also on a crash. After `kill -9` they stay: fail-closed, traffic on the intercepted ports stops
until a daemon starts again (it replaces the stale chains) or they are removed by hand.

The lab (tests, demo, attack suite, handover) starts and stops daemons in a namespace with
`mptcrypt.topo.daemons.spawn_in_netns(ns, *args)` and `stop(proc)`.
"""

from __future__ import annotations

import importlib
import ipaddress
import logging
import os
import selectors
import signal
import socket
import sys
import time
from typing import Callable

from mptcrypt import __version__
from mptcrypt.constants import CONTROL_SOCKET
from mptcrypt.core.config import Policy
from mptcrypt.crypto import segment
from mptcrypt.core.state import LIVE as HANDSHAKE_STATES
from mptcrypt.daemon.config import DaemonConfig, describe, format_ports
from mptcrypt.daemon.control import ControlServer, Deferred
from mptcrypt.daemon.icmp_edge import TooBigClamp
from mptcrypt.daemon.iptables import Rules, syn_lane_queue
from mptcrypt.daemon.keylog import KeyLog
from mptcrypt.daemon.metrics import MetricsServer, exposition
from mptcrypt.daemon.monitor import event_record
from mptcrypt.daemon.notify import Notifier
from mptcrypt.daemon.lanes import Lanes, make_lanes
from mptcrypt.daemon.queue_batched import DEFAULT_QUEUE_BACKEND
from mptcrypt.daemon.rawsock import RawSocket
from mptcrypt.errors import AlreadyRunningError, ConfigError, MptcryptError, NotRootError
from mptcrypt.wire.messages import PROTOCOL_VERSION

log = logging.getLogger("mptcrypt.daemon")

ENGINE_ENV = "MPTCRYPT_ENGINE"  # hidden switch for edge tests: "module:Class" of a stand-in engine
READY_MARKER = "mptcrypt daemon ready"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # clean stop: rules removed, queue drained
RELOAD_SIGNAL = signal.SIGHUP  # read the configuration again (the usual daemon convention)
# settings bound into the iptables rules and the queue at start-up: a reload cannot change them
RESTART_ONLY = ("ports", "queue_num", "fail_open", "workers")
LOOP_CAP = 1.0  # longest sleep of the loop (seconds)
CONTROL_TICK = 5.0  # how often idle control connections are reaped
VERBOSE_STATS_EVERY = 10.0  # with -v: a counters line this often, when they changed
MAX_SID_WAIT = 30.0  # longest a `sid` request may stay parked waiting for its handshake


def make_engine(config: DaemonConfig, key_log=None, gateway: bool = False):
    """The protocol engine; MPTCRYPT_ENGINE=module:Class selects a stand-in (edge tests only: the counting
    pass-through engine lives in tests/integration/passthrough.py)."""
    choice = os.environ.get(ENGINE_ENV, "")
    if ":" in choice:
        module, _, name = choice.partition(":")
        try:
            engine = getattr(importlib.import_module(module), name)(config)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"{ENGINE_ENV}={choice!r}: {exc} (leave it unset outside edge tests)") from None
        log.warning("%s=%s: a stand-in engine, packets are NOT protected", ENGINE_ENV, choice)
        return engine
    if choice not in ("", "core"):
        raise ConfigError(f"unknown {ENGINE_ENV}={choice!r} (leave it unset, or module:Class for edge tests)")
    try:
        from mptcrypt.core.engine import Engine
    except ModuleNotFoundError as exc:
        if exc.name not in ("mptcrypt.core.engine",):
            raise
        raise MptcryptError("this mptcrypt build has no protocol engine (mptcrypt.core.engine is missing)") from None
    from mptcrypt.daemon.sockdiag import sockets_alive

    # a gateway forwards other hosts' connections: no local socket to ask about, idle flows age out as before
    return Engine(config, socket_alive=None if gateway else sockets_alive, key_log=key_log)


def _addr(value, what: str) -> tuple[str, int]:
    """["10.0.0.1", 80] -> ("10.0.0.1", 80), with IPv4-mapped IPv6 addresses written as IPv4."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f'"{what}" must be [address, port]')
    host, port = value
    try:
        ip = ipaddress.ip_address(str(host).split("%", 1)[0])
        port = int(port)
    except ValueError:
        raise ConfigError(f'"{what}": bad address or port {value!r}') from None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if not 0 <= port <= 65535:
        raise ConfigError(f'"{what}": port {port} out of range')
    return str(ip), port


class Daemon:
    """One daemon in the current network namespace. `run()` blocks until SIGTERM/SIGINT or `request_stop()`.

    `loader()` returns the configuration afresh (file and flags); SIGHUP calls it through `reload()`."""

    def __init__(self, config: DaemonConfig, engine=None, control_name: str = CONTROL_SOCKET, verbose: bool = False,
                 loader: Callable[[], DaemonConfig] | None = None, takeover: bool = False,
                 metrics: tuple[str, int] | None = None, keylog: str | None = None,
                 queue_backend: str = DEFAULT_QUEUE_BACKEND, gateway_lans: tuple[str, ...] = ()):
        self.config = config
        self.queue_backend = queue_backend
        self.gateway_lans = tuple(gateway_lans)  # gateway mode: protect forwarded traffic of these LANs
        self.engine = engine
        self.control_name = control_name
        self.verbose = verbose
        self.loader = loader
        self.takeover = takeover  # take the live sessions over from the daemon running now (graceful restart)
        self.handed_over_at: float | None = None  # we gave our sessions to a successor: stop, keep the rules
        self.started = time.monotonic()
        self.stop_reason: str | None = None
        self.reload_pending = False
        self.reloads = 0  # configurations applied by reload(), for `mptcrypt status`
        self.worker: Lanes | None = None
        self.notifier = Notifier.from_env()  # systemd Type=notify; a no-op outside systemd
        self.metrics_address = metrics  # --metrics ADDRESS:PORT: Prometheus scrape endpoint
        self.keylog_path = keylog  # --keylog FILE / MPTCRYPT_KEYLOGFILE: subflow traffic keys (daemon/keylog.py)
        self.keylog: KeyLog | None = None

    def request_stop(self, reason: str = "requested") -> None:
        self.stop_reason = reason

    def reload(self) -> bool:
        """Load the configuration again and hand it to the engine; keep the old one (and log why) if it is bad.
        New connections get the new policy, rules and ciphers; live ones keep their keys and state."""
        self.reload_pending = False
        if self.loader is None:
            log.warning("%s: this daemon has no configuration to reload", RELOAD_SIGNAL.name)
            return False
        try:
            new = self.loader()
        except MptcryptError as exc:
            log.error("reload failed, the running configuration stays: %s", exc)
            return False
        kept = [key for key in RESTART_ONLY if getattr(new, key) != getattr(self.config, key)]
        for key in kept:
            setattr(new, key, getattr(self.config, key))
        if kept:
            log.warning("reload: %s changed; restart the daemon to apply that (kept the running value)", ", ".join(kept))
        reconfigure = getattr(self.engine, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(new)
        elif self.engine is not None:
            self.engine.config = new
        self.config = new
        self.reloads += 1
        info = describe(new)
        log.info("reloaded configuration (policy %s, %d rule(s), ciphers %s / %s)", info["policy"], len(info["rules"]),
                 ",".join(info["pub_ciphers"]), ",".join(info["sym_ciphers"]))
        return True

    # --- control requests ------------------------------------------------------------------------------------
    def handle_request(self, request: dict) -> dict:
        cmd = request["cmd"]
        engine = self.engine
        if cmd == "status":
            return {
                "ok": True,
                "running": True,
                "pid": os.getpid(),
                "uptime": round(time.monotonic() - self.started, 3),
                **describe(self.config),
                "reloads": self.reloads,
                "engine": getattr(engine, "name", type(engine).__name__),
                "gateway": list(self.gateway_lans),
                "version": __version__,
                "keylog": self.keylog_path,
            }
        if cmd == "sessions":
            return {"ok": True, "sessions": engine.sessions()}
        if cmd == "stats":
            edge = {**self.worker.stats(), **self.clamp.counters} if self.worker is not None else {}
            return {"ok": True, "stats": engine.stats(), "edge": edge}
        if cmd == "monitor":  # the control server streams engine events to this client from now on
            return {"ok": True, "subscribe": True}
        if cmd == "metrics":
            return {"ok": True, "text": self.metrics_text()}
        if cmd == "sid":
            return self._sid_request(request)
        if cmd == "handover" and hasattr(engine, "export_state"):
            # a successor started with --takeover: it gets our sessions (in memory, over this root-only socket of
            # our namespace), we stop as soon as the answer is out, leaving the rules (and the queue's packets,
            # which the kernel holds or drops fail-closed until the successor binds it) in place
            state = engine.export_state()
            self.handed_over_at = time.monotonic()
            log.info("handing %d flows over to a successor daemon", len(state["flows"]))
            return {"ok": True, "state": state}
        return {"ok": False, "error": f"unknown command {cmd!r} (status, sessions, stats, metrics, monitor, sid, handover)"}

    def metrics_text(self) -> str:
        """Prometheus exposition of the engine's and the packet path's counters (daemon/metrics.py)."""
        worker = self.worker
        edge = worker.stats() if worker is not None else {}
        return exposition(self.engine.stats(), edge, self.engine.sessions(), worker.latency if worker else None)

    def _sid_request(self, request: dict) -> dict | Deferred:
        """The sid of a flow once its protection is decided; parked (up to `wait` s) while its handshake runs."""
        local, remote = _addr(request.get("local"), "local"), _addr(request.get("remote"), "remote")
        wait = request.get("wait", 0)
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or wait < 0:
            raise ConfigError('"wait" must be a number of seconds >= 0')
        flow_state = getattr(self.engine, "flow_state", None)  # engines without handshakes decide at once

        def decided(final: bool = False) -> dict | None:
            state = flow_state(local, remote) if flow_state is not None else None
            in_flight = state in HANDSHAKE_STATES
            if in_flight and not final:
                return None
            sid = None if in_flight else self.engine.session_id(local, remote)
            answer = {"ok": True, "sid": sid.hex() if sid else None, "state": state.value if state else None}
            if in_flight:
                answer["pending"] = True
            return answer

        first = decided()
        if first is not None or wait == 0:
            return first or decided(final=True)
        deadline = time.monotonic() + min(float(wait), MAX_SID_WAIT)
        return Deferred(poll=decided, expire=lambda: decided(final=True), deadline=deadline)

    # --- lifecycle -------------------------------------------------------------------------------------------
    def run(self) -> int:
        config = self.config
        control = ControlServer(self.handle_request, self.control_name)
        handover = _take_over(self.control_name) if self.takeover else None
        _bind_control(control, wait=HANDOVER_TIMEOUT if handover is not None else 0.0)
        # first: a second daemon in this namespace fails here, before touching anything
        selector = selectors.DefaultSelector()
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        old_handlers: dict[int, object] = {}
        old_wakeup = None
        raw = worker = rules = metrics = None
        try:
            if self.metrics_address is not None:
                metrics = MetricsServer(self.metrics_text, self.metrics_address)
                metrics.bind()
            for signum in (*STOP_SIGNALS, RELOAD_SIGNAL):
                old_handlers[signum] = signal.signal(signum, self._on_signal)
            old_wakeup = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
            if self.engine is None:
                if self.keylog_path:
                    self.keylog = KeyLog(self.keylog_path, PROTOCOL_VERSION)
                    log.warning("KEY LOG ON: every subflow's traffic keys go to %s; whoever reads it can decrypt "
                                "captured traffic. Use it for debugging only, then delete it", self.keylog_path)
                self.engine = make_engine(config, key_log=self.keylog, gateway=bool(self.gateway_lans))
            if handover is not None:
                log.info("took over %d flows from the previous daemon", self.engine.import_state(handover))
            log.info("segment path: %s (%s)", segment.SEGMENT_PATH, segment.SEGMENT_PATH_REASON)
            raw = RawSocket()
            # ICMP "too big" -> MTU minus the MAC option, else the engine; a router's forwarding path checks the device
            # MTU, not the learned one, so a gateway need not resend anything through the raw socket
            self.clamp = TooBigClamp(self.engine, resend=not self.gateway_lans)
            # SYNs on their own queue: a SYN flood cannot stall established flows
            worker, backend = make_lanes(self.queue_backend, self.clamp, config.queue_num,
                                         syn_lane_queue(config.queue_num), raw.send)
            self.worker = worker
            log.info("queue backend: %s", backend)
            where = "in the queue's C drain" if getattr(worker, "backend", "") == "batched" else "in Engine.handle"
            on = getattr(self.engine, "fast", None) is not None
            log.info("fast path: %s%s", segment.FAST_PATH_REASON,
                     f" ({where}; MPTCRYPT_FAST_PATH=off turns it off)" if on else "")
            worker.on_events = lambda events: control.publish([event_record(e) for e in events])
            worker.bind()
            required = config.policy is Policy.REQUIRED or any(r.policy is Policy.REQUIRED for r in config.rules)
            rules = Rules(config.queue_num, config.ports, config.fail_open, self.gateway_lans, require_ipv6=required)
            rules.install()  # last: from here on packets are queued, and we are listening
            control.attach(selector)
            if metrics is not None:
                metrics.attach(selector)
            worker.attach(selector, lambda _mask: worker.read())
            selector.register(wake_r, selectors.EVENT_READ, lambda _mask: _drain(wake_r))
            log.info(
                "%s (queue %d, SYN lane %d, ports %s, policy %s, %s%s)",
                READY_MARKER,
                config.queue_num,
                syn_lane_queue(config.queue_num),
                format_ports(config.ports),
                config.policy.value,
                "fail-open" if config.fail_open else "fail-closed",
                f", gateway for {', '.join(self.gateway_lans)}" if self.gateway_lans else "",
            )
            self.notifier.ready(f"protecting ports {format_ports(config.ports)}, policy {config.policy.value}")
            worker.tick()
            self._loop(selector, worker, control)
            log.info("stopping (%s)", self.stop_reason)
        finally:
            if metrics is not None:
                metrics.close()
            self._shutdown(rules, worker, raw, control, selector)
            if old_wakeup is not None:
                signal.set_wakeup_fd(old_wakeup)
            for signum, handler in old_handlers.items():
                signal.signal(signum, handler)
            wake_r.close()
            wake_w.close()
        if self.keylog is not None:
            log.warning("key log %s: %d subflows logged while this daemon ran", self.keylog_path, self.keylog.lines)
            self.keylog.close()
        log.info("mptcrypt daemon stopped")
        return 0

    def _on_signal(self, signum: int, _frame) -> None:
        if signum == RELOAD_SIGNAL:
            self.reload_pending = True  # done by the loop, not in the handler
        else:
            self.stop_reason = signal.Signals(signum).name

    def _loop(self, selector: selectors.BaseSelector, worker: Lanes, control: ControlServer) -> None:
        next_control_tick = time.monotonic() + CONTROL_TICK
        next_stats = time.monotonic() + VERBOSE_STATS_EVERY
        last_counters: dict = {}
        while self.stop_reason is None:
            timeout = worker.timeout(LOOP_CAP)
            parked = control.next_deadline()
            if parked is not None:
                timeout = max(0.0, min(timeout, parked - time.monotonic()))
            for key, mask in selector.select(timeout):
                key.data(mask)
            worker.tick()
            if self.reload_pending:
                with self.notifier.reloading():  # systemd: RELOADING=1, then READY=1 (also when it failed)
                    self.reload()
            now = time.monotonic()
            control.poll_parked(now)
            if self.handed_over_at is not None and (not control.writing() or now - self.handed_over_at > 5):
                self.stop_reason = "handed over to a successor"
            if now >= next_control_tick:
                control.tick(now)
                next_control_tick = now + CONTROL_TICK
            if self.verbose and now >= next_stats:
                next_stats = now + VERBOSE_STATS_EVERY
                counters = worker.stats()
                if counters != last_counters:
                    last_counters = counters
                    log.debug("counters: %s", " ".join(f"{k}={v}" for k, v in last_counters.items() if v))

    def _shutdown(self, rules, worker, raw, control, selector) -> None:
        self.notifier.stopping()
        if self.handed_over_at is not None:  # the successor keeps the chains and continues the connections
            rules = None
        if rules is not None and rules.installed and worker is not None and hasattr(self.engine, "shutdown"):
            try:  # open protected connections are reset, never continued in clear once the rules are gone
                resets = self.engine.shutdown()
                worker.inject(resets)
                if resets:
                    log.info("reset %d protected connection(s) that cannot continue without the daemon",
                             len(resets) // 2)
            except Exception as exc:
                log.warning("while resetting protected connections at shutdown: %s", exc)
        if rules is not None:
            try:
                rules.remove()
            except Exception as exc:
                log.error(
                    "could not remove the iptables rules (%s); remove them by hand: iptables -D OUTPUT -j MPTC-OUT; "
                    "iptables -D INPUT -j MPTC-IN; iptables -F MPTC-OUT; iptables -F MPTC-IN; iptables -X MPTC-OUT; "
                    "iptables -X MPTC-IN (and the same with ip6tables)",
                    exc,
                )
        if worker is not None:
            if rules is not None and not rules.installed:
                try:  # give what was queued before the rules went away its verdict
                    worker.read(0)
                    worker.tick()
                except Exception as exc:
                    log.warning("while draining the queue at shutdown: %s", exc)
            worker.unbind()
        if raw is not None:
            raw.close()
        control.close()
        selector.close()


HANDOVER_TIMEOUT = 10.0  # seconds a successor waits for its predecessor to release the control socket


def _take_over(name: str) -> dict:
    """Ask the running daemon for its live state (graceful restart). MptcryptError if none runs or it refuses."""
    from mptcrypt.daemon.control import ControlClient

    return ControlClient(name, timeout=HANDOVER_TIMEOUT).request("handover")["state"]


def _bind_control(control: ControlServer, wait: float) -> None:
    """Bind the control socket; after a handover, retry while the predecessor is still on its way out."""
    deadline = time.monotonic() + wait
    while True:
        try:
            control.bind()
            return
        except AlreadyRunningError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(64):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def setup_logging(verbose: bool = False) -> None:
    """Log lines to stderr, unless the application already configured logging."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s mptcrypt[%(process)d] %(levelname)s %(message)s"))
        root.addHandler(handler)
    logging.getLogger("mptcrypt").setLevel(logging.DEBUG if verbose else logging.INFO)


def run_daemon(config: DaemonConfig, verbose: bool = False, loader: Callable[[], DaemonConfig] | None = None,
               takeover: bool = False, queue_backend: str = DEFAULT_QUEUE_BACKEND,
               gateway_lans: tuple[str, ...] = (), **options) -> int:
    """Run the daemon in the foreground in the current network namespace until SIGTERM/SIGINT. Returns 0.
    `loader` reads the configuration again on SIGHUP; `takeover` takes the live sessions over from the daemon
    running now (graceful restart); `options`: metrics=(addr, port), keylog=path."""
    if os.geteuid() != 0:
        raise NotRootError(
            "the daemon needs root (CAP_NET_ADMIN for iptables and NFQUEUE, CAP_NET_RAW for its raw socket): "
            "run `mptcrypt daemon` as root, or `ip netns exec NS mptcrypt daemon` as root for a namespace"
        )
    setup_logging(verbose)
    if config.workers > 1:  # N processes over --queue-balance (daemon/workers.py)
        from mptcrypt.daemon.workers import Coordinator

        if takeover:
            raise ConfigError(f"--takeover needs --workers 1 (this configuration asks for {config.workers}): a "
                              "graceful restart hands one engine's state to one engine")
        return Coordinator(config, config.workers, loader=loader, queue_backend=queue_backend,
                           gateway_lans=gateway_lans, **options).run()
    return Daemon(config, verbose=verbose, loader=loader, takeover=takeover, queue_backend=queue_backend,
                  gateway_lans=gateway_lans, **options).run()
