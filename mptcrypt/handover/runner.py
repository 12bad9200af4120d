"""Play a handover scenario on topologies/handover.py, for plain MPTCP and/or mptcrypt, and measure it.

One run (one target): build the network (a fresh `Net`), start the daemons (mptcrypt), apply the scenario's
setup steps, start the applications (`workload.py`: bulk transfer + request/response), wait for the first
handshake (its public-key operations are the baseline), open the request connection, let the paths settle, then
play the timeline while `Sampler` reads the subflows every 100 ms and a poller reads `mptcrypt sessions`. After
the timeline: stop the applications, read the daemons' counters, and open a new plain TCP connection from the
mobile's new address to the server (it must resume the session: `resumptions` +1, `pk_ops` unchanged). The
network and every process are torn down in `finally`, whatever happened.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import queue
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from mptcrypt.errors import AlreadyRunningError, MptcryptError
from mptcrypt.handover import workload
from mptcrypt.handover.sampler import SAMPLE_INTERVAL, Sampler, peer_series, queue_series, subflow_series
from mptcrypt.handover.scenario import TOPOLOGY_FILE, Event, Scenario

TARGETS = ("plain", "mptcrypt")
MOBILE, SERVER = "mobile", "server"
SERVER_ADDR = "10.0.1.1"  # the server address every connection goes to (its Wi-Fi side)
SETTLE = 1.0  # seconds between opening the connections and t = 0 of the timeline (joins come up)
HANDSHAKE_TIMEOUT = 15.0
LINE_TIMEOUT = 20.0
SESSIONS_EVERY = 0.5
NET_WAIT = 600.0  # how long to wait for another engineer's topology to go away
STATS_KEYS = ("pk_ops", "pk_keygen", "pk_handshakes", "handshakes_completed", "joins_protected", "joins_refused",
              "joins_zero_pk", "resumptions", "resume_fallbacks", "mac_failures", "unauthenticated_dropped",
              "unknown_flow_dropped", "handshake_failures", "fallbacks_plain", "option_overflow")
PROTECTED_STATES = ("encrypting", "closed")


# --- helpers ----------------------------------------------------------------------------------------------------


class LineReader:
    """Lines of a child's stdout, read by a thread, handed out with a timeout."""

    def __init__(self, proc: subprocess.Popen, name: str) -> None:
        self.proc = proc
        self.name = name
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True, name=f"reader-{name}").start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str, timeout: float = LINE_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(0.0, left))
            except queue.Empty:
                raise MptcryptError(f"{self.name}: no '{prefix}' line within {timeout:g} s "
                                    f"(got: {self.seen[-5:]})") from None
            if line is None:
                raise MptcryptError(f"{self.name} exited (status {self.proc.wait()}) before '{prefix}' "
                                    f"(got: {self.seen[-5:]})")
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def send(self, cmd: str) -> None:
        try:
            self.proc.stdin.write(cmd + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass


class DaemonControl:
    """The daemon of a host's namespace, asked through a small relay process in that namespace
    (`python -m mptcrypt.handover.workload control`: one `ControlClient` request per stdin line)."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()  # the poller thread and the main thread share it

    def request(self, cmd: str) -> dict[str, Any]:
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self.proc = self.node.popen([sys.executable, "-m", "mptcrypt.handover.workload", "control"],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
            try:
                self.proc.stdin.write(cmd + "\n")
                self.proc.stdin.flush()
                line = self.proc.stdout.readline()
            except (BrokenPipeError, OSError) as exc:
                raise MptcryptError(f"control relay of {self.node.name}: {exc}") from None
        if not line:
            raise MptcryptError(f"control relay of {self.node.name} exited ({self.proc.poll()})")
        response = json.loads(line)
        if not response.get("ok"):
            raise MptcryptError(f"daemon of {self.node.name} refused {cmd!r}: {response.get('error')}")
        return response

    def stats(self) -> dict[str, Any]:
        return self.request("stats")["stats"]

    def sessions(self) -> list[dict[str, Any]]:
        return self.request("sessions")["sessions"]

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(2)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
            self.proc = None


def conn_rows(sessions: list[dict[str, Any]], port: int) -> list[dict[str, Any]]:
    """Rows (connections) of `mptcrypt sessions` with a subflow to/from `port`."""
    out = []
    for row in sessions:
        flows = [row, *(row.get("subflows") or [])]
        if any(str(f.get("remote", "")).endswith(f":{port}") or str(f.get("local", "")).endswith(f":{port}")
               for f in flows):
            out.append(row)
    return out


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def start_net(net: Any, wait: float, log: Callable[[str], None]) -> None:
    """`net.start()`, waiting (up to `wait` s) while another topology with the same namespaces is up."""
    deadline = time.monotonic() + wait
    said = False
    while True:
        try:
            net.start()
            return
        except AlreadyRunningError as exc:
            if time.monotonic() > deadline:
                raise
            if not said:
                log(f"waiting for another topology to go away: {exc}")
                said = True
            time.sleep(2.0)


# --- one run ----------------------------------------------------------------------------------------------------


@dataclass
class RunState:
    """What the timeline did to the mobile's addresses (for labels and for the resumption check)."""

    addrs: dict[str, str]  # intf -> current address (no prefix)
    initial: dict[str, str]
    addr_intf: dict[str, str] = field(default_factory=dict)  # every address ever used -> intf
    endpoint_ids: dict[str, int] = field(default_factory=dict)  # intf -> MPTCP endpoint id (kept across removal)
    shaping: dict[str, dict[str, Any]] = field(default_factory=dict)  # intf -> topology's bw/loss/delay/jitter
    up: dict[str, bool] = field(default_factory=dict)
    delay_changed: set[str] = field(default_factory=set)  # intfs whose delay lines a degrade changed


def _shaping(sh) -> dict[str, Any]:
    """What `restore` sets an interface back to: the topology's bandwidth, loss, delay and jitter (ms)."""
    return {"bw": sh.bw, "loss": sh.loss, "delay": sh.delay_us / 1000, "jitter": sh.jitter_us / 1000}


class Run:
    progress: Callable[[str, float, str], None] | None = None  # (target, timeline seconds reached, what)

    def __init__(self, scenario: Scenario, target: str, out_dir: str, log: Callable[[str], None] = print,
                 net_wait: float = NET_WAIT, capture: bool = False, cc: str | None = None) -> None:
        if target not in TARGETS:
            raise MptcryptError(f"unknown target {target!r}: plain or mptcrypt")
        self.scenario = scenario
        self.target = target
        self.out_dir = out_dir
        self.log = log
        self.net_wait = net_wait
        self.net: Any = None
        self.daemons: list[subprocess.Popen] = []
        self.controls: dict[str, DaemonControl] = {}
        self.procs: list[subprocess.Popen] = []
        self.events: list[dict[str, Any]] = []
        self.session_samples: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.capture = capture
        self.cc = cc  # TCP congestion control of the applications' sockets (None: the machine's default)
        self.captures: list[subprocess.Popen] = []
        self.pcaps: list[str] = []
        self.state: RunState | None = None
        self.t_stop = float("inf")
        self._logs: list[Any] = []
        self._poll_stop = threading.Event()

    # --- events -------------------------------------------------------------------------------------------
    def _endpoint_id(self, intf: str) -> int | None:
        addr = self.state.addrs.get(intf)
        for ep in self.net.mptcp_endpoints(MOBILE):
            if ep["addr"] == addr:
                return ep["id"]
        return None

    def _ip_mptcp(self, *args: str) -> None:
        proc = self.net[MOBILE].run(["ip", "mptcp", "endpoint", *args], check=False)
        if proc.returncode != 0:
            raise MptcryptError(f"ip mptcp endpoint {' '.join(args)}: {proc.stderr.strip()}")

    def _set_addr(self, ev: Event) -> None:
        net, st = self.net, self.state
        new = ipaddress.ip_interface(ev.addr)
        server = net[SERVER]
        peer = net.plan.peer(net.plan.node(MOBILE).intf(ev.intf))
        peer_addr = net.plan.node(SERVER).intf(peer.name).addr
        if ev.server_addr and (peer_addr is None or peer_addr.ip not in new.network):
            # the new network's router: an extra address on the server's end of that link
            proc = server.run(["ip", "addr", "add", ev.server_addr, "dev", peer.name], check=False)
            if proc.returncode != 0 and "File exists" not in proc.stderr:
                raise MptcryptError(f"adding {ev.server_addr} to server:{peer.name}: {proc.stderr.strip()}")
        gw = ev.gw
        if gw is None and ev.server_addr:
            gw = str(ipaddress.ip_interface(ev.server_addr).ip)
        kwargs = {"gw": gw} if gw else {}
        net.set_addr(MOBILE, ev.intf, str(new), **kwargs)
        st.addrs[ev.intf] = str(new.ip)
        st.addr_intf[str(new.ip)] = ev.intf

    def apply(self, ev: Event) -> None:
        net, st = self.net, self.state
        if ev.action == "degrade":
            params = {k: getattr(ev, k) for k in ("loss", "bw", "delay", "jitter") if getattr(ev, k) is not None}
            net.set_link(MOBILE, SERVER, intf=ev.intf, **params)
            if params.keys() & {"delay", "jitter"}:
                st.delay_changed.add(ev.intf)
        elif ev.action == "restore":
            shaping = st.shaping[ev.intf]
            keep = ("bw", "loss") + (("delay", "jitter") if ev.intf in st.delay_changed else ())
            net.set_link(MOBILE, SERVER, intf=ev.intf, **{k: shaping[k] for k in keep})
            st.delay_changed.discard(ev.intf)
        elif ev.action == "down":
            net.link_down(MOBILE, SERVER, intf=ev.intf)
            st.up[ev.intf] = False
        elif ev.action == "up":
            # link first, then the address: the endpoint's new subflow then finds its route at once
            net.link_up(MOBILE, SERVER, intf=ev.intf)
            st.up[ev.intf] = True
            if ev.addr:
                self._set_addr(ev)
        elif ev.action == "addr":
            self._set_addr(ev)
        elif ev.action == "backup":
            ep_id = self._endpoint_id(ev.intf)
            if ep_id is None:
                raise MptcryptError(f"{ev.intf} has no MPTCP endpoint to change")
            self._ip_mptcp("change", "id", str(ep_id), "backup" if ev.on else "nobackup")
        elif ev.action == "endpoint":
            ep_id = self._endpoint_id(ev.intf)
            if ev.on:
                if ep_id is not None:
                    return
                args = ["add", st.addrs[ev.intf], "dev", ev.intf]
                if ev.intf in st.endpoint_ids:
                    args += ["id", str(st.endpoint_ids[ev.intf])]
                args += ["subflow"] + (["backup"] if ev.backup else [])
                self._ip_mptcp(*args)
            elif ep_id is not None:
                st.endpoint_ids[ev.intf] = ep_id
                self._ip_mptcp("delete", "id", str(ep_id))
        else:  # parse_event refuses these
            raise MptcryptError(f"unknown action {ev.action}")

    # --- the run --------------------------------------------------------------------------------------------
    def _workload(self, host: str, role: str, result_path: str) -> tuple[subprocess.Popen, LineReader]:
        argv = [sys.executable, "-m", "mptcrypt.handover.workload", role, "--direction", self.scenario.direction,
                "--connect", SERVER_ADDR, "--result", result_path] + (["--cc", self.cc] if self.cc else [])
        errlog = open(result_path + ".log", "w")
        self._logs.append(errlog)
        proc = self.net[host].popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errlog, text=True,
                                    bufsize=1)
        self.procs.append(proc)
        return proc, LineReader(proc, f"{role} workload")

    def _start_captures(self) -> None:
        """tcpdump (headers only) on the server's end of each link: out_dir/SCENARIO-TARGET-IF.pcap."""
        for intf in ("wifi", "lte"):
            dev = self._peer_name(intf)
            path = os.path.join(self.out_dir, f"{self.scenario.name}-{self.target}-{dev}.pcap")
            proc = self.net[SERVER].popen(["tcpdump", "-i", dev, "-s", "160", "-U", "-w", path, "tcp"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            self.captures.append(proc)
            self.pcaps.append(path)
            line = proc.stderr.readline()  # "listening on DEV ...": from here on it sees every packet
            if "listening" not in line:
                raise MptcryptError(f"tcpdump on server:{dev} did not start: {line.strip() or proc.stderr.read()}")

    def _poll_sessions(self) -> None:
        ctl = self.controls[MOBILE]
        while not self._poll_stop.is_set():
            t = time.monotonic()
            try:
                rows = ctl.sessions()
                self.session_samples.append({
                    "t": t,
                    "bulk": [_slim(r) for r in conn_rows(rows, workload.BULK_PORT)],
                    "rr": [_slim(r) for r in conn_rows(rows, workload.RR_PORT)],
                })
            except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
                if len(self.errors) < 20:
                    self.errors.append(f"sessions poll: {exc}")
            self._poll_stop.wait(SESSIONS_EVERY)

    def _wait_handshake(self) -> dict[str, dict[str, Any]]:
        """Until the bulk connection is protected on the mobile; returns both daemons' counters then."""
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        while True:
            rows = conn_rows(self.controls[MOBILE].sessions(), workload.BULK_PORT)
            server_rows = conn_rows(self.controls[SERVER].sessions(), workload.BULK_PORT)
            if rows and rows[0].get("protected") and server_rows and server_rows[0].get("protected"):
                return {h: _pick(self.controls[h].stats()) for h in (MOBILE, SERVER)}
            if time.monotonic() > deadline:
                raise MptcryptError(f"the bulk connection was not protected within {HANDSHAKE_TIMEOUT:g} s: {rows}")
            time.sleep(0.05)

    def execute(self) -> dict[str, Any]:
        from mptcrypt.topo import Net, load_topo
        from mptcrypt.topo.subflows import mptcp_counters

        sc = self.scenario
        sc.check_delay_lines()  # again: the caller may have changed topo_args (bench --no-delay)
        os.makedirs(self.out_dir, exist_ok=True)
        topo, name, args, kwargs = load_topo(str(TOPOLOGY_FILE), sc.topo_spec)
        self.net = net = Net(topo, source={"file": str(TOPOLOGY_FILE), "topo": name, "args": args,
                                           "kwargs": kwargs, "by": "mptcrypt handover"})
        result: dict[str, Any] = {"target": self.target, "scenario": sc.name, "ok": False}
        t_start = time.monotonic()
        start_net(net, self.net_wait, self.log)
        try:
            mplan = net.plan.node(MOBILE)
            initial = {i.name: str(i.addr.ip) for i in mplan.intfs if i.addr is not None}
            self.state = RunState(addrs=dict(initial), initial=dict(initial),
                                  addr_intf={a: i for i, a in initial.items()},
                                  shaping={i.name: _shaping(i.shaping) for i in mplan.intfs},
                                  up={i.name: True for i in mplan.intfs})
            if self.target == "mptcrypt":
                from mptcrypt.topo.daemons import spawn_in_netns

                for host in (SERVER, MOBILE):
                    log_path = os.path.join(self.out_dir, f"{sc.name}-{self.target}-daemon-{host}.log")
                    self.daemons.append(spawn_in_netns(net[host].ns, log_path=log_path))
                    self.controls[host] = DaemonControl(net[host])
            for ev in sc.setup:
                self.apply(ev)
                self.events.append({"t": None, "setup": True, "what": ev.describe(), **ev.to_json()})
            counters_before = mptcp_counters(net[MOBILE])
            result["congestion_control"] = self.cc or net[MOBILE].run(
                ["cat", "/proc/sys/net/ipv4/tcp_congestion_control"], check=False).stdout.strip()
            base = os.path.join(self.out_dir, f"{sc.name}-{self.target}")
            _server, server_lines = self._workload(SERVER, "server", base + "-server.json")
            server_lines.expect("ready")
            if self.capture:
                self._start_captures()
            sampler = Sampler(net[MOBILE].ns, [workload.BULK_PORT, workload.RR_PORT],
                              qdisc_ns={MOBILE: net[MOBILE].ns, SERVER: net[SERVER].ns},
                              peer_ns=net[SERVER].ns).start()
            try:
                _mobile, mobile_lines = self._workload(MOBILE, "mobile", base + "-mobile.json")
                bulk_line = mobile_lines.expect("bulk")
                baseline = None
                if self.target == "mptcrypt":
                    baseline = self._wait_handshake()
                mobile_lines.send("rr")
                rr_line = mobile_lines.expect("rr")
                t_rr = time.monotonic()
                if self.target == "mptcrypt":
                    threading.Thread(target=self._poll_sessions, daemon=True, name="sessions-poller").start()
                time.sleep(SETTLE)
                t0 = time.monotonic()
                self.log(f"[{self.target}] {sc.name}: timeline starts ({len(sc.events)} events, {sc.duration:g} s)")
                for ev in sc.events:
                    delay = t0 + ev.at - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    t_apply = time.monotonic()
                    self.apply(ev)
                    self.events.append({"t": t_apply - t0, "took": time.monotonic() - t_apply,
                                        "what": ev.describe(), **ev.to_json()})
                    self.log(f"[{self.target}]   t={t_apply - t0:6.2f} s  {ev.describe()}")
                    if self.progress is not None:
                        self.progress(self.target, ev.at, ev.describe())
                delay = t0 + sc.duration - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if self.progress is not None:
                    self.progress(self.target, sc.duration, "timeline over, draining")
                t_stop = self.t_stop = time.monotonic()
                server_lines.send("stop")
                mobile_lines.send("stop")
                mobile_lines.expect("done", workload.DRAIN_TIMEOUT + workload.RR_GRACE + 15)
                server_lines.expect("done", workload.DRAIN_TIMEOUT + workload.RR_GRACE + 15)
            finally:
                sampler.stop()
                self._poll_stop.set()
            t_done = time.monotonic()
            final = None
            if self.target == "mptcrypt":
                final = {h: {"stats": self.controls[h].stats(), "sessions": self.controls[h].sessions()}
                         for h in (MOBILE, SERVER)}
            counters_after = mptcp_counters(net[MOBILE])
            resume = self._resume_check(baseline)
            with open(base + "-mobile.json") as fh:
                mobile_res = json.load(fh)
            with open(base + "-server.json") as fh:
                server_res = json.load(fh)
            result.update(self._summarize(
                t0=t0, t_rr=t_rr, t_stop=t_stop, t_done=t_done, sampler=sampler, mobile=mobile_res,
                server=server_res, baseline=baseline, final=final, resume=resume,
                mptcp_delta={k: counters_after.get(k, 0) - counters_before.get(k, 0)
                             for k in counters_after if counters_after.get(k, 0) != counters_before.get(k, 0)},
                lines={"bulk": bulk_line, "rr": rr_line},
            ))
            result["ok"] = True
        except Exception as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            result["wall_s"] = time.monotonic() - t_start
            self._teardown()
        return result

    def _resume_check(self, baseline: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
        """A new plain TCP connection from the mobile's new address to the server: it must resume."""
        net = self.net
        src = self._new_address()
        out: dict[str, Any] = {"src": src, "dst": f"{SERVER_ADDR}:{workload.RESUME_PORT}"}
        if src is None:
            out["error"] = "no mobile address up"
            return out
        before = {h: self.controls[h].stats() for h in self.controls} if self.controls else {}
        wl = [sys.executable, "-m", "mptcrypt.handover.workload"]
        server = net[SERVER].popen([*wl, "resume-server"], stdout=subprocess.PIPE, text=True)
        try:
            LineReader(server, "resume server").expect("ready", 10)
            client = net[MOBILE].run([*wl, "resume-client", "--src", src, "--connect", SERVER_ADDR], timeout=30,
                                     check=False)
            try:
                out.update(json.loads(client.stdout.strip().splitlines()[-1]))
            except (ValueError, IndexError):
                out["error"] = f"resume client: {client.stdout.strip()[-300:]} {client.stderr.strip()[-300:]}"
            if self.controls and out.get("local"):
                rows = self.controls[MOBILE].sessions()
                mine = [r for r in rows if r.get("local") == out["local"]]
                out["session_row"] = _slim(mine[0]) if mine else None
        finally:
            try:
                server.wait(5)
            except subprocess.TimeoutExpired:
                server.kill()
        if self.controls:
            time.sleep(0.1)
            after = {h: self.controls[h].stats() for h in self.controls}
            out["resumptions_delta"] = {h: after[h]["resumptions"] - before[h]["resumptions"] for h in after}
            out["pk_ops_delta"] = {h: after[h]["pk_ops"] - before[h]["pk_ops"] for h in after}
            out["pk_ops_since_first"] = {h: after[h]["pk_ops"] - baseline[h]["pk_ops"] for h in after} \
                if baseline else None
            row = out.get("session_row") or {}
            out["resumed"] = bool(row.get("resumed")) and all(v >= 1 for v in out["resumptions_delta"].values()) \
                and all(v == 0 for v in out["pk_ops_delta"].values())
        return out

    def _new_address(self) -> str | None:
        """The address a new connection comes from: the new-path interface's address if it changed, else any
        address of an interface that is up other than the one of the first handshake."""
        st = self.state
        first = st.initial.get("wifi")
        order = [self.scenario.new_path] if self.scenario.new_path else []
        order += [i for i in ("wifi", "lte") if i not in order]
        for intf in order:
            if st.up.get(intf) and st.addrs.get(intf) and st.addrs[intf] != first:
                return st.addrs[intf]
        for intf in order:
            if st.up.get(intf) and st.addrs.get(intf):
                return st.addrs[intf]
        return None

    def _teardown(self) -> None:
        from mptcrypt.topo.daemons import stop as stop_daemon

        self._poll_stop.set()
        for ctl in self.controls.values():
            ctl.close()
        for proc in self.captures:  # SIGTERM: tcpdump flushes its file
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        for proc in reversed(self.daemons):
            try:
                stop_daemon(proc)
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"stopping daemon {proc.pid}: {exc}")
        if self.net is not None:
            self.net.stop()
        for fh in self._logs:
            fh.close()

    # --- summary --------------------------------------------------------------------------------------------
    def _summarize(self, *, t0, t_rr, t_stop, t_done, sampler, mobile, server, baseline, final, resume,
                   mptcp_delta, lines) -> dict[str, Any]:
        sc = self.scenario
        for side in (mobile, server):
            if "fatal" in side:
                raise MptcryptError(f"{side['host']} workload failed: {side['fatal']}")
        up = sc.direction == "up"
        snd, rcv = (mobile, server) if up else (server, mobile)
        s_res, r_res = snd["bulk_result"] or {}, rcv["bulk_result"] or {}
        counter = "bytes_acked" if up else "bytes_received"
        series = subflow_series(sampler.samples, t0, counter, workload.BULK_PORT)
        rr_series = subflow_series(sampler.samples, t0, "bytes_acked", workload.RR_PORT)
        st = self.state
        for key, sf in series["subflows"].items():
            ip = sf["local"].rsplit(":", 1)[0]
            sf["intf"] = st.addr_intf.get(ip, "?")
            sf["label"] = f"{sf['intf']} {sf['local']}"

        # application: goodput bins and stall (longest gap between reads inside the timeline)
        bins = r_res.get("bins", [])
        if bins:  # every bin from the first to the last, empty ones as 0: an outage shows as zero goodput
            have = dict(bins)
            bins = [(k, have.get(k, 0)) for k in range(bins[0][0], bins[-1][0] + 1)]
        app_t = [(k + 0.5) * r_res.get("bin", 0.1) - t0 for k, _ in bins]
        app_mbps = [n * 8 / r_res.get("bin", 0.1) / 1e6 for _, n in bins]
        gaps = [g for g in r_res.get("gaps", []) if g["start"] + g["length"] >= t0 and g["start"] <= t_stop]
        stall = max(gaps, key=lambda g: g["length"]) if gaps else None
        window_bytes = sum(n for k, n in bins if t0 <= k * r_res.get("bin", 0.1) < t_stop)
        rr = mobile.get("rr_result") or {}
        answers = [a for a in rr.get("answers", []) if t0 <= a[1] <= t_stop]
        lat = [(b - a) * 1000 for _, a, b in answers]

        # the bulk sender's shaped egress queues: their backlog is the queueing delay the answers wait behind
        sender_host = MOBILE if up else SERVER
        first_event = min((e.at for e in sc.events), default=sc.duration)
        initial_rates = {(dev if sender_host == SERVER else intf): st.shaping[intf]["bw"]
                         for intf, dev in (("wifi", self._peer_name("wifi")), ("lte", self._peer_name("lte")))}
        queues = queue_series(sampler.samples, t0, sender_host, initial_rates, 0.0, first_event)
        out: dict[str, Any] = {
            "direction": sc.direction,
            "queue_before_events_ms": {dev: q["mean_ms"] for dev, q in queues.items()},
            "subflow_cc": sorted({str(v.get("cc")) for v in series["subflows"].values()}),
            "duration": sc.duration,
            "timeline": {"rr_connected": t_rr - t0, "stop": t_stop - t0, "done": t_done - t0, "settle": SETTLE},
            "events": self.events,
            "connections": {"bulk": lines["bulk"], "rr": lines["rr"]},
            "bulk": {
                "bytes_sent": s_res.get("bytes"), "bytes_received": r_res.get("bytes"),
                "sha256_sent": s_res.get("sha256"), "sha256_received": r_res.get("sha256"),
                "intact": bool(s_res.get("bytes")) and s_res.get("sha256") == r_res.get("sha256")
                and s_res.get("bytes") == r_res.get("bytes") and bool(r_res.get("eof")),
                "eof": r_res.get("eof"), "errors": [e for e in (s_res.get("error"), r_res.get("error")) if e],
                "goodput_mbps": window_bytes * 8 / (t_stop - t0) / 1e6 if t_stop > t0 else None,
            },
            "stall_s": stall["length"] if stall else 0.0,
            "stall_at": stall["start"] - t0 if stall else None,
            "stalls": [{"at": g["start"] - t0, "s": g["length"]} for g in gaps[:10]],
            "latency_ms": {
                "count": len(lat), "p50": percentile(lat, 50), "p95": percentile(lat, 95),
                "p99": percentile(lat, 99), "max": max(lat) if lat else None,
                "requests_sent": rr.get("sent"), "answered": rr.get("answered"),
                "unanswered": sum(1 for _, sent in rr.get("unanswered", []) if t0 <= sent <= t_stop),
                "error": rr.get("error"),
            },
            "subflows": {  # of the bulk connection, as the mobile's `ss` saw them (ESTABLISHED 4-tuples)
                "created": series["created"], "closed": series["closed"],
                "created_count": len(series["created"]),
                "closed_count": sum(1 for c in series["closed"] if c["t"] <= t_stop - t0),  # not the final close
                "created_in_timeline": sum(1 for c in series["created"] if c["t"] >= 0),
            },
            "mptcp_counters_delta": mptcp_delta,
            "sampler": {"interval_target": SAMPLE_INTERVAL, **sampler.intervals(), "errors": sampler.errors},
            "addresses": {"initial": st.initial, "final": st.addrs},
            "resume": resume,
            "series": {
                "t": series["t"], "counter": counter,
                "subflows": {k: {kk: v[kk] for kk in ("label", "intf", "local", "remote", "mbps", "first", "last",
                                                      "cc", "retrans", "max_backoff", "max_rto_ms")}
                             for k, v in series["subflows"].items()},
                "app_t": app_t, "app_mbps": app_mbps,
                "rr_subflows": {k: {"local": v["local"], "first": v["first"], "last": v["last"]}
                                for k, v in rr_series["subflows"].items()},
                "latency": [[round(a - t0, 4), round((b - a) * 1000, 3)] for _, a, b in answers],
                "peer_subflows": peer_series(sampler.samples, t0, workload.BULK_PORT),
                "queues": {sender_host: {dev: {"t": [round(x, 3) for x in q["t"]],
                                               "backlog_bytes": [round(d * q["rate_mbps"] * 1e3 / 8)
                                                                 for d in q["delay_ms"]]}
                                         for dev, q in queues.items()}},
            },
            "errors": self.errors,
            "pcaps": self.pcaps,
        }
        out["new_path"] = self._new_path(series, final)
        if self.target == "mptcrypt":
            out["crypto"] = self._crypto_summary(baseline, final)
        return out

    def _peer_name(self, intf: str) -> str:
        """The server's end of the mobile's interface `intf` (s-wifi, s-lte)."""
        return self.net.plan.peer(self.net.plan.node(MOBILE).intf(intf)).name

    def _new_path(self, series: dict[str, Any], final: dict[str, Any] | None) -> dict[str, Any]:
        """Subflows created during the timeline from the new-path interface's final address."""
        sc, st = self.scenario, self.state
        intf = sc.new_path
        if intf is None:
            return {"expected": None}
        addr = st.addrs.get(intf)
        fresh = [k for k, v in series["subflows"].items()
                 if v["local"].rsplit(":", 1)[0] == addr and v["first"] >= 0]
        out: dict[str, Any] = {"expected": intf, "addr": addr, "established": bool(fresh), "subflows": fresh}
        if final is not None:
            locals_ = {k.split("->")[0] for k in fresh}
            during: dict[str, dict[str, Any]] = {}  # last row seen while the workload ran
            for sample in self.session_samples:
                if sample["t"] > self.t_stop:  # the connection's normal close comes after: not "during"
                    continue
                for row in sample["bulk"]:
                    for sf in row.get("subflows", []):
                        if sf["local"] in locals_:
                            during[sf["local"]] = sf
            at_end = [sf for row in conn_rows(final[MOBILE]["sessions"], workload.BULK_PORT)
                      for sf in row.get("subflows", []) if sf["local"] in locals_]
            out["daemon_rows"] = list(during.values())
            out["daemon_rows_at_end"] = at_end
            out["protected"] = bool(during) and all(
                sf.get("state") == "encrypting" and sf.get("kind") == "join" for sf in during.values()) and all(
                sf.get("state") in PROTECTED_STATES for sf in at_end)
        return out

    def _crypto_summary(self, baseline, final) -> dict[str, Any]:
        bulk_sids = sorted({r.get("sid") for s in self.session_samples for r in s["bulk"] if r.get("sid")})
        rr_sids = sorted({r.get("sid") for s in self.session_samples for r in s["rr"] if r.get("sid")})
        final_bulk = conn_rows(final[MOBILE]["sessions"], workload.BULK_PORT)
        server_bulk = conn_rows(final[SERVER]["sessions"], workload.BULK_PORT)
        fs = {h: _pick(final[h]["stats"]) for h in (MOBILE, SERVER)}
        return {
            "baseline": baseline,
            "final": fs,
            "final_all": {h: final[h]["stats"] for h in (MOBILE, SERVER)},
            "pk_ops_first_handshake": {h: baseline[h]["pk_ops"] for h in baseline},
            "pk_ops_after_first": {h: fs[h]["pk_ops"] - baseline[h]["pk_ops"] for h in fs},
            "sid": bulk_sids[0] if len(bulk_sids) == 1 else bulk_sids,
            "sid_unchanged": len(bulk_sids) == 1 and bool(final_bulk) and final_bulk[0].get("sid") == bulk_sids[0],
            "sid_server": server_bulk[0].get("sid") if server_bulk else None,
            "sid_samples": sum(1 for s in self.session_samples if s["bulk"]),
            "rr_sids": rr_sids,
            "rr_resumed": any(r.get("resumed") for s in self.session_samples for r in s["rr"]),
            "joins_protected": {h: fs[h]["joins_protected"] - baseline[h]["joins_protected"] for h in fs},
            "final_bulk_subflows": final_bulk[0].get("subflows") if final_bulk else [],
        }


def _pick(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: stats.get(k, 0) for k in STATS_KEYS}


def _slim(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("local", "remote", "state", "protected", "sid", "resumed", "mptcp", "pk_ops", "index")
    out = {k: row.get(k) for k in keep if k in row}
    out["subflows"] = [{k: sf.get(k) for k in ("local", "remote", "state", "kind", "index", "backup", "addr_id")}
                       for sf in row.get("subflows") or []]
    return out


def run_scenario(scenario: Scenario, targets: list[str], out_dir: str, log: Callable[[str], None] = print,
                 net_wait: float = NET_WAIT, capture: bool = False, cc: str | None = None,
                 progress: Callable[[str, float, str], None] | None = None) -> dict[str, Any]:
    """Run `scenario` once per target (each on a fresh network). Returns the summary (results per target).
    `progress(target, t, what)` is called at each timeline event (t: seconds into the timeline)."""
    summary: dict[str, Any] = {"scenario": scenario.to_json(), "targets": {}, "started": time.time()}
    for target in targets:
        try:
            run = Run(scenario, target, out_dir, log, net_wait, capture, cc)
            run.progress = progress
            summary["targets"][target] = run.execute()
        except Exception as exc:  # noqa: BLE001 - one failed target must not hide the other's numbers
            log(f"[{target}] {scenario.name} FAILED: {type(exc).__name__}: {exc}")
            summary["targets"][target] = {"target": target, "scenario": scenario.name, "ok": False,
                                          "error": f"{type(exc).__name__}: {exc}",
                                          "traceback": traceback.format_exc()}
    summary["finished"] = time.time()
    return summary
