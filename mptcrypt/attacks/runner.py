"""Run attacks x targets on `topologies/hijack.py` and collect the evidence each verdict rests on.

One `Net` per IP version for the whole matrix (one topology per machine at a time; building it is the slow part):
IPv4 rows on `hijack.py`, rows whose module says `FAMILY = 6` on `hijack.py ipv6=True`, after them. Per target:
`plain` runs no daemon; `mptcrypt` runs a daemon in the client and the server (restarted only when an attack needs
another policy, e.g. the downgrade's `required` variant). Per cell (attack x target x variant):

1. the attack module's `prepare(ctx)` (optional: e.g. the downgrade's middlebox in the hub's namespace);
2. the attacker agent starts in `mptc-attacker` (`python -m mptcrypt.attacks.agent NAME --port P`) and opens its tap;
3. the transfer starts (fresh port per cell; the module's `make_transfer(ctx)` if it has one); while it runs, the
   runner samples the MPTCP subflows of both ends (`ss -tni`: per-subflow byte counters) and, for mptcrypt, the
   daemons' `sessions` once the connection is up;
4. afterwards: the transfer's result (sha256, bytes, how it ended), the agent's report (what it learned, sent,
   received), the daemons' counter deltas (`stats`), the kernels' MPTcpExt counter deltas;
5. the module's `judge(ev)` turns that evidence into an outcome.

Outcomes: EFFECTIVE (the attack had its effect), BLOCKED (it had none and the transfer is intact), DETECTED (the
attack changed something but it is visible: the downgrade under `opportunistic`), ERROR (the cell could not be
run or judged; never counts as a pass).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from mptcrypt.attacks import ATTACKS, get_attack
from mptcrypt.attacks.transfer import Transfer

REPO = Path(__file__).resolve().parents[2]
TOPOLOGY = REPO / "topologies" / "hijack.py"
TARGETS = ("plain", "mptcrypt")
BASE_PORT = 6100
CLIENT, SERVER, ATTACKER, HUB = "client", "server", "attacker", "hub"
CLIENT_IP, CLIENT_IP2, SERVER_IP, ATTACKER_IP = "10.0.1.2", "10.0.2.2", "10.0.1.1", "10.0.1.66"
# The hosts' addresses per IP version: an attack module with FAMILY = 6 runs on `hijack,ipv6=True` (issue 12 item 4)
ADDRS = {
    4: {"client": CLIENT_IP, "client2": CLIENT_IP2, "server": SERVER_IP, "server2": "10.0.2.1",
        "attacker": ATTACKER_IP},
    6: {"client": "fd00:1::2", "client2": "fd00:2::2", "server": "fd00:1::1", "server2": "fd00:2::1",
        "attacker": "fd00:1::66"},
}
TOPO_SPEC = {4: None, 6: "hijack,ipv6=True"}

EFFECTIVE, BLOCKED, DETECTED, ERROR = "EFFECTIVE", "BLOCKED", "DETECTED", "ERROR"


@dataclass
class Verdict:
    outcome: str
    summary: str
    evidence: dict = field(default_factory=dict)


@dataclass
class Cell:
    attack: str
    target: str
    variant: str | None
    outcome: str
    summary: str
    evidence: dict
    seconds: float
    raw: dict = field(default_factory=dict, repr=False)

    def as_dict(self, raw: bool = False) -> dict:
        d = asdict(self)
        if not raw:
            d.pop("raw")
        return d


@dataclass
class Evidence:
    """Everything measured in one cell; what the judges read."""

    attack: str
    target: str
    variant: str | None
    policy: str | None
    port: int
    transfer: dict
    agent: dict
    stats: dict  # host -> daemon counter deltas (mptcrypt only)
    counters: dict  # host -> MPTcpExt counter deltas
    timeline: list  # [{"t": epoch, "client": [subflow...], "server": [subflow...]}]
    sessions: dict  # host -> daemon sessions rows for this connection (mptcrypt only), once it is up
    sessions_late: dict  # the same, ~1.5 s after the attack
    extra: dict = field(default_factory=dict)  # what prepare()/the module's runner hooks recorded
    family: int = 4  # IP version of the connection (ADDRS)

    # --- helpers for the judges --------------------------------------------------------------------
    @property
    def attack_t(self) -> float | None:
        return self.agent.get("attack_t")

    @property
    def result(self) -> dict:
        return self.agent.get("result") or {}

    @property
    def view(self) -> dict:
        return self.agent.get("view") or {}

    @property
    def steady_end(self) -> float | None:
        """The last moment the transfer was certainly still running (the client's last write)."""
        t = self.transfer["upload"].get("writer_done_t")
        return t - 0.05 if t else None

    def stat(self, host: str, name: str) -> int:
        return int((self.stats.get(host) or {}).get(name, 0))

    def counter(self, host: str, name: str) -> int:
        return int((self.counters.get(host) or {}).get(f"MPTcpExt{name}", 0))

    def path_of(self, sf: dict, side: str) -> str:
        """'path1' / 'path2' / 'attacker' / 'other' for one `ss` subflow entry of `side`."""
        addrs = {sf.get(k, "").rsplit(":", 1)[0].strip("[]") for k in ("remote", "local")}
        a = ADDRS[self.family]
        if a["attacker"] in addrs:
            return "attacker"
        if a["client2"] in addrs or a["server2"] in addrs:
            return "path2"
        if a["client"] in addrs:
            return "path1"
        return "other"

    def paths_at(self, side: str, t: float | None = None) -> dict[str, dict]:
        """path -> the subflow entry of `side` in the last sample at or before `t` (None: the last sample)."""
        sample = None
        for s in self.timeline:
            if t is None or s["t"] <= t:
                sample = s
        if sample is None:
            return {}
        out: dict[str, dict] = {}
        for sf in sample.get(side, []):
            out.setdefault(self.path_of(sf, side), sf)
        return out

    def paths_ever(self, side: str) -> set[str]:
        return {self.path_of(sf, side) for s in self.timeline for sf in s.get(side, [])}

    def bytes_by_path(self, side: str, key: str, t0: float | None, t1: float | None) -> dict[str, int]:
        """Growth of counter `key` (e.g. bytes_received) per path of `side` between the samples nearest t0 and t1.
        A subflow that disappears keeps its last value."""
        last: dict[str, dict[str, int]] = {}  # path -> {subflow id: value}, carried forward
        first_vals: dict[str, dict[str, int]] | None = None
        for s in self.timeline:
            if t1 is not None and s["t"] > t1:
                break
            for sf in s.get(side, []):
                ident = f"{sf.get('local')}-{sf.get('remote')}"
                v = sf.get(key)
                if isinstance(v, int):
                    last.setdefault(self.path_of(sf, side), {})[ident] = v
            if t0 is not None and s["t"] <= t0:
                first_vals = {p: dict(d) for p, d in last.items()}
        start = first_vals or {}
        return {p: sum(v - start.get(p, {}).get(i, 0) for i, v in d.items()) for p, d in last.items()}

    def conn_sessions(self, host: str) -> list[dict]:
        return self.sessions.get(host) or []


def verdict_dict(v: Verdict) -> dict:
    return {"outcome": v.outcome, "summary": v.summary, "evidence": v.evidence}


# --- daemons ------------------------------------------------------------------------------------------------


class Daemons:
    """mptcrypt daemons in the client and the server, (re)started with the policy a cell needs."""

    def __init__(self, net, log: Callable[[str], None]) -> None:
        self.net = net
        self.log = log
        self.procs: dict[str, subprocess.Popen] = {}
        self.policy: str | None = None

    def ensure(self, policy: str | None) -> None:
        if policy == self.policy and all(p.poll() is None for p in self.procs.values()):
            return
        self.stop()
        if policy is None:
            return
        from mptcrypt.topo.daemons import spawn_in_netns

        for host in (CLIENT, SERVER):
            self.procs[host] = spawn_in_netns(self.net[host].ns, "--policy", policy)
        self.policy = policy
        self.log(f"  daemons up in client and server (policy {policy})")

    def stop(self) -> None:
        from mptcrypt.topo.daemons import stop

        for host, proc in list(self.procs.items()):
            try:
                stop(proc, remove_log=True)
            except Exception as exc:  # keep stopping the others
                self.log(f"  stopping the {host} daemon: {exc}")
        self.procs.clear()
        self.policy = None

    def restart(self, host: str, *extra: str) -> None:
        """Stop `host`'s daemon (SIGTERM: a clean stop) and start a new one with the same policy (and `extra`
        daemon options, e.g. a --config for one cell)."""
        from mptcrypt.topo.daemons import spawn_in_netns, stop

        stop(self.procs[host], remove_log=True)
        self.procs[host] = spawn_in_netns(self.net[host].ns, "--policy", self.policy, *extra)
        self.log(f"  {host} daemon restarted (policy {self.policy})")

    def takeover(self, host: str) -> None:
        """Graceful restart: a new daemon with `--takeover` takes the live sessions from the running one in memory
        (docs/protocol.md §8); the old one exits by itself."""
        from mptcrypt.errors import MptcryptError
        from mptcrypt.topo.daemons import spawn_in_netns

        old = self.procs[host]
        new = spawn_in_netns(self.net[host].ns, "--policy", self.policy, "--takeover")
        self.procs[host] = new
        try:
            rc = old.wait(15)
        except subprocess.TimeoutExpired:
            old.kill()
            old.wait()
            raise MptcryptError(f"the {host} daemon did not exit after the takeover") from None
        try:
            os.unlink(old.log_path)
        except (FileNotFoundError, AttributeError):
            pass
        if rc != 0:
            raise MptcryptError(f"the {host} daemon exited with {rc} after the takeover")
        self.log(f"  {host} daemon taken over (policy {self.policy})")

    def cpu_seconds(self, host: str) -> float | None:
        """CPU time (user + system) the daemon of `host` has used so far, from /proc/PID/stat (`ip netns exec`
        execs the daemon in place: the Popen's pid is the daemon's); None if it is gone."""
        proc = self.procs.get(host)
        if proc is None:
            return None
        try:
            with open(f"/proc/{proc.pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return None
        # fields after the command: state is [0], utime [11], stime [12] (proc(5): fields 14 and 15)
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def alive(self) -> dict[str, bool]:
        return {h: p.poll() is None for h, p in self.procs.items()}

    def request(self, host: str, cmd: str) -> dict:
        """One control request to the daemon of `host` (its abstract socket lives in the host's namespace)."""
        if host not in self.procs:
            return {}
        from mptcrypt.constants import CONTROL_SOCKET

        sock = self.net[host].socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(5)
            try:
                sock.connect(CONTROL_SOCKET)
            except (ConnectionRefusedError, FileNotFoundError):
                return {}  # no daemon at this moment (a cell restarting it): nothing to report

            buf = b""
            try:
                sock.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
                while b"\n" not in buf:
                    chunk = sock.recv(1 << 20)
                    if not chunk:
                        break
                    buf += chunk
            except (ConnectionResetError, BrokenPipeError):
                return {}  # the daemon exited while answering (a cell restarting it): nothing to report
        finally:
            sock.close()
            try:
                self.net._sockets.remove(sock)
            except ValueError:
                pass
        return json.loads(buf.partition(b"\n")[0] or b"{}")

    def stats(self) -> dict[str, dict]:
        out = {}
        for host in self.procs:
            r = self.request(host, "stats")
            out[host] = {**r.get("stats", {}), **r.get("edge", {})}
        return out

    def sessions(self) -> dict[str, list]:
        return {host: self.request(host, "sessions").get("sessions", []) for host in self.procs}


# --- the runner -----------------------------------------------------------------------------------------------


@dataclass
class Settings:
    duration: float = 4.0  # seconds of paced transfer
    attack_after: float = 1.2  # seconds after the SYN
    observe: float = 4.6  # the agent watches until this long after the SYN
    idle_timeout: float = 4.0
    sample_every: float = 0.2
    lock_timeout: float = 900.0  # one topology per machine: wait this long for another run's to go


class CellContext:
    """What a module's prepare()/cleanup hooks get."""

    def __init__(self, runner: "Runner", net, target: str, variant: str | None, port: int) -> None:
        self.runner = runner
        self.net = net
        self.target = target
        self.variant = variant
        self.port = port
        self.extra: dict = {}
        self.cleanups: list[Callable[[], None]] = []
        self.procs: list[subprocess.Popen] = []
        self.daemons: Daemons | None = None  # the cell's daemons (a module may restart one: daemon-restart)


class Runner:
    def __init__(
        self,
        attacks: list[str] | None = None,
        targets: tuple[str, ...] = TARGETS,
        settings: Settings | None = None,
        log: Callable[[str], None] | None = None,
        topology: str | os.PathLike = TOPOLOGY,
        base_port: int = BASE_PORT,
        keep_raw: bool = False,
        progress: Callable[[int, int, str], None] | None = None,
    ) -> None:
        self.attacks = list(attacks or ATTACKS)
        self.progress = progress
        self.targets = tuple(targets)
        self.settings = settings or Settings()
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.topology = str(topology)
        self.port = base_port
        self.keep_raw = keep_raw
        self.cells: list[Cell] = []

    def run(self) -> list[Cell]:
        from mptcrypt.topo import Net, load_topo

        plan = [(get_attack(name), name, target, variant) for target in self.targets for name in self.attacks
                for variant in _variants(get_attack(name), target)]
        done = 0
        for family in sorted({_family(module) for module, *_ in plan}):  # one topology at a time
            cells = [c for c in plan if _family(c[0]) == family]
            topo, *_ = load_topo(self.topology, TOPO_SPEC[family] if self.topology == str(TOPOLOGY) else None)
            t0 = time.monotonic()
            net = Net(topo, lock_timeout=self.settings.lock_timeout,
                      source={"file": self.topology, "by": "mptcrypt.attacks"})
            net.start()
            daemons = Daemons(net, self.log)
            try:
                self.log(f"topology {os.path.basename(self.topology)} (IPv{family}) up in "
                         f"{time.monotonic() - t0:.1f} s")
                self._prepare_attacker(net, family)
                for module, name, target, variant in cells:
                    if self.progress is not None:  # progress(cells done, cells in all, next cell)
                        self.progress(done, len(plan), f"{name} vs {target}" + (f" ({variant})" if variant else ""))
                    self.cells.append(self._cell(net, daemons, module, name, target, variant))
                    done += 1
            finally:
                daemons.stop()
                net.stop()
        if self.progress is not None:
            self.progress(len(plan), len(plan), "done")
        return self.cells

    def _prepare_attacker(self, net, family: int = 4) -> None:
        """The attacker's kernel knows none of the connections it forges: keep it from answering them with RSTs
        (the agent's own frames go out through AF_PACKET, below iptables)."""
        for tool in ("iptables",) + (("ip6tables",) if family == 6 else ()):
            net[ATTACKER].run([tool, "-w", "-A", "OUTPUT", "-p", "tcp", "--tcp-flags", "RST", "RST", "-j", "DROP"])
        net[ATTACKER].run(["ip", "link", "set", "a-eth0", "promisc", "on"])

    def _next_port(self) -> int:
        self.port += 1
        return self.port

    def _cell(self, net, daemons: Daemons, module, name: str, target: str, variant: str | None) -> Cell:
        label = f"{name} vs {target}" + (f" ({variant})" if variant else "")
        self.log(f"- {label}")
        started = time.monotonic()
        port = self._next_port()
        ctx = CellContext(self, net, target, variant, port)
        ctx.daemons = daemons
        policy = None
        if target == "mptcrypt":
            policy = getattr(module, "policy", lambda v: "opportunistic")(variant)
        raw: dict[str, Any] = {}
        try:
            daemons.ensure(policy)
            if hasattr(module, "prepare"):
                module.prepare(ctx)
            ev = self._measure(net, daemons, module, name, target, variant, policy, port, ctx)
            raw = asdict(ev)
            try:
                v = module.judge(ev)
            except Exception as exc:
                v = Verdict(ERROR, f"judge failed: {type(exc).__name__}: {exc}")
            if not all(daemons.alive().values()):
                v = Verdict(ERROR, "a daemon died during the cell: " + v.summary, v.evidence)
        except Exception as exc:
            v = Verdict(ERROR, f"{type(exc).__name__}: {exc}")
        finally:
            for fn in reversed(ctx.cleanups):
                try:
                    fn()
                except Exception as exc:
                    self.log(f"  cleanup: {exc}")
            for proc in ctx.procs:
                _kill(proc)
        secs = round(time.monotonic() - started, 2)
        self.log(f"  -> {v.outcome}: {v.summary} ({secs} s)")
        return Cell(name, target, variant, v.outcome, v.summary, v.evidence, secs, raw if self.keep_raw else {})

    def _measure(self, net, daemons, module, name, target, variant, policy, port, ctx: CellContext) -> Evidence:
        s = self.settings
        from mptcrypt.topo import mptcp_counters

        attack_after = getattr(module, "ATTACK_AFTER", s.attack_after)
        agent_args = [
            name, "--port", str(port), "--attack-after", str(attack_after), "--observe", str(s.observe),
            "--deadline", str(s.duration + s.idle_timeout + 12),
        ]
        family = _family(module)
        a = ADDRS[family]
        if family != 4:
            agent_args += ["--client", a["client"], "--server", a["server"], "--me", a["attacker"]]
        if variant:
            agent_args += ["--mode", variant]
        agent = net[ATTACKER].popen([sys.executable, "-m", "mptcrypt.attacks.agent", *agent_args],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ctx.procs.append(agent)
        _wait_ready(agent, "attacker agent")
        stats0 = daemons.stats()
        counters0 = {h: mptcp_counters(net[h]) for h in (CLIENT, SERVER)}
        if hasattr(module, "make_transfer"):  # e.g. a bulk transfer whose throughput is measured (syn-flood)
            transfer = module.make_transfer(ctx)
        else:
            shape = {"duration": s.duration, "idle_timeout": s.idle_timeout,
                     **getattr(module, "TRANSFER", {})}  # a module may change it: a one-way transfer (signal-replay)
            transfer = Transfer(net, port, server_addr=a["server"], **shape)
        transfer.listen()
        transfer.start()
        timeline: list[dict] = []
        sessions: dict = {}
        sessions_late: dict = {}
        end = time.monotonic() + s.duration + 2 * s.idle_timeout + 10
        while any(t.is_alive() for t in transfer.threads) and time.monotonic() < end:
            timeline.append(_sample(net, port))
            if transfer.connected_at and not sessions and daemons.procs and time.time() - transfer.connected_at > 0.8:
                sessions = _conn_rows(daemons.sessions(), port)
            if transfer.connected_at and sessions and not sessions_late and \
                    time.time() - transfer.connected_at > s.attack_after + 1.5:
                sessions_late = _conn_rows(daemons.sessions(), port)
            time.sleep(s.sample_every)
        timeline.append(_sample(net, port))
        result = transfer.result(timeout=5)
        if daemons.procs and not sessions:
            sessions = _conn_rows(daemons.sessions(), port)
        try:
            out, err = agent.communicate(timeout=s.observe + 15)
        except subprocess.TimeoutExpired:
            _kill(agent)
            out, err = agent.communicate()
        try:
            agent_out = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"error": "no output"}
        except ValueError:
            agent_out = {"error": "unparsable output", "stdout": out[-2000:]}
        if err.strip().replace("ready", "").strip():
            agent_out["stderr"] = err[-2000:]
        if hasattr(module, "finish"):
            module.finish(ctx)
        stats1 = daemons.stats()
        counters1 = {h: mptcp_counters(net[h]) for h in (CLIENT, SERVER)}
        return Evidence(
            attack=name, target=target, variant=variant, policy=policy, port=port, transfer=result, agent=agent_out,
            stats={h: _delta(stats1.get(h, {}), stats0.get(h, {})) for h in stats1},
            counters={h: _delta(counters1[h], counters0[h]) for h in counters1},
            timeline=timeline, sessions=sessions, sessions_late=sessions_late,
            extra={k: v for k, v in ctx.extra.items() if not k.endswith("_proc")}, family=family,
        )


def _family(module) -> int:
    return getattr(module, "FAMILY", 4)


def _variants(module, target: str) -> list[str | None]:
    fn = getattr(module, "variants", None)
    return list(fn(target)) if fn else [None]


def _sample(net, port: int) -> dict:
    from mptcrypt.topo import tcp_subflows

    sample: dict[str, Any] = {"t": time.time()}
    for host in (CLIENT, SERVER):
        try:
            sample[host] = [_trim(sf) for sf in tcp_subflows(net[host], port)]
        except Exception:
            sample[host] = []
    return sample


_KEEP = ("local", "remote", "bytes_sent", "bytes_acked", "bytes_received", "segs_out", "segs_in", "data_segs_out",
         "data_segs_in", "lastsnd", "lastrcv")


def _trim(sf: dict) -> dict:
    return {k: sf[k] for k in _KEEP if k in sf}


def _conn_rows(sessions: dict[str, list], port: int) -> dict[str, list]:
    out = {}
    for host, rows in sessions.items():
        out[host] = [r for r in rows if str(r.get("local", "")).endswith(f":{port}")
                     or str(r.get("remote", "")).endswith(f":{port}")]
    return out


def _delta(after: dict, before: dict) -> dict:
    out = {}
    for k, v in after.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            d = v - (before.get(k) or 0)
            if d:
                out[k] = d
    return out


def _wait_ready(proc: subprocess.Popen, what: str, timeout: float = 15.0) -> None:
    box: list[str] = []

    def read() -> None:
        box.append(proc.stderr.readline())

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout)
    if not box or "ready" not in box[0]:
        rest = ""
        if proc.poll() is not None:
            rest = proc.stderr.read()
        raise RuntimeError(f"the {what} did not start: {(box[0] if box else '') + rest}".strip())


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_matrix(attacks=None, targets=TARGETS, settings=None, log=None, keep_raw=False) -> list[Cell]:
    return Runner(attacks, targets, settings, log, keep_raw=keep_raw).run()
