"""Per-subflow counters over time: `ss -tinOH` (and `ss -MinOH`) in the mobile's namespace every <= 100 ms.

Each sample lists the TCP sockets of the watched ports with their 4-tuple, state and counters (`bytes_acked`,
`bytes_received`, ...). A subflow is identified by its 4-tuple; goodput per subflow is the difference of
`bytes_acked` (the mobile sends) or `bytes_received` (the mobile receives) between samples. A 4-tuple seen
ESTABLISHED for the first time is a subflow created; one that disappears (or leaves ESTABLISHED) is closed.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

SAMPLE_INTERVAL = 0.1
_KV = re.compile(r"\b([a-z_]+):(\d+)\b")
_ADDR = re.compile(r"^(\[?[0-9a-fA-F.:]+\]?)(?:%\S+)?:(\d+|\*)$")
_CC = re.compile(r"\s(cubic|bbr|bbr2|reno|bic|htcp|vegas|westwood|dctcp|illinois|hybla|scalable|veno|yeah|lp|nv|cdg|"
                 r"highspeed)\s")
TCP_STATES = {"ESTAB", "SYN-SENT", "SYN-RECV", "FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT", "CLOSE-WAIT", "LAST-ACK",
              "CLOSING", "CLOSE", "LISTEN", "UNCONN"}


def parse_ss(text: str) -> list[dict[str, Any]]:
    """`ss -tinOH` (or -M) output, one socket per line -> [{'state', 'local', 'remote', 'mptcp', counters...}]."""
    rows = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[0] not in TCP_STATES:
            continue
        addrs = []
        for f in fields[3:6]:
            m = _ADDR.match(f)
            if m:
                addrs.append(f"{m.group(1)}:{m.group(2)}")
        if len(addrs) < 2:
            continue
        row: dict[str, Any] = {"state": fields[0], "local": addrs[0], "remote": addrs[1],
                               "mptcp": "tcp-ulp-mptcp" in line}
        for key, value in _KV.findall(line):
            row.setdefault(key, int(value))
        cc = _CC.search(line)
        row["cc"] = cc.group(1) if cc else None
        retrans = re.search(r"\bretrans:\d+/(\d+)", line)
        row["retrans_total"] = int(retrans.group(1)) if retrans else 0
        ulp = re.search(r"tcp-ulp-mptcp flags:(\S+)", line)
        flags = ulp.group(1) if ulp else ""
        row["sf_flags"] = flags
        row["backup_flag"] = "b" in flags or "B" in flags  # b: we asked for backup, B: the peer did
        rows.append(row)
    return rows


def port_filter(ports: Sequence[int]) -> str:
    return "( " + " or ".join(f"dport = :{p} or sport = :{p}" for p in ports) + " )"


_QDISC = re.compile(r"^qdisc (\S+) (\S+) dev (\S+) (root|parent \S+).*?\n\s*Sent (\d+) bytes (\d+) pkt "
                    r"\(dropped (\d+),.*?\n\s*backlog (\d+)b (\d+)p", re.M | re.S)


def parse_qdisc(text: str) -> dict[str, dict[str, int]]:
    """`tc -s qdisc show` -> {dev: {'backlog': bytes, 'packets': n, 'dropped': n}} for each root qdisc."""
    out = {}
    for m in _QDISC.finditer(text):
        if m.group(4) == "root" and m.group(1) != "noqueue":
            out[m.group(3)] = {"backlog": int(m.group(8)), "packets": int(m.group(9)), "dropped": int(m.group(7))}
    return out


@dataclass
class Sample:
    t: float  # time.monotonic()
    subflows: list[dict[str, Any]]
    mptcp: list[dict[str, Any]] = field(default_factory=list)
    qdisc: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # host -> dev -> backlog/dropped
    peer_subflows: list[dict[str, Any]] = field(default_factory=list)  # the same sockets seen by the other end


class Sampler:
    """A thread that samples `ss` in namespace `ns` for `ports` every `interval` seconds until stopped.

    With `qdisc_ns` ({host: namespace}) each sample also reads the root qdiscs' backlog (`tc -s qdisc`) of those
    namespaces: the shaped links' queues, where request latency comes from when the bulk transfer fills them."""

    def __init__(self, ns: str, ports: Sequence[int], interval: float = SAMPLE_INTERVAL,
                 qdisc_ns: dict[str, str] | None = None, peer_ns: str | None = None) -> None:
        self.ns = ns
        self.ports = list(ports)
        self.interval = interval
        self.samples: list[Sample] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        flt = port_filter(self.ports)
        script = f"ss -tinOH '{flt}'; echo @@MPTCP@@; ss -MinOH '{flt}'"
        # the other end's sockets too (`peer_ns`): the sender's view (cwnd, backoff, retransmits) of a download
        script += f"; echo @@PEER@@; ip netns exec {peer_ns} ss -tinOH '{flt}'" if peer_ns else "; echo @@PEER@@"
        self.qdisc_hosts = list(qdisc_ns or {})
        for host, qns in (qdisc_ns or {}).items():
            script += f"; echo @@QDISC@@; ip netns exec {qns} tc -s qdisc show" if qns != ns else \
                "; echo @@QDISC@@; tc -s qdisc show"
        self._argv = ["ip", "netns", "exec", ns, "sh", "-c", script]

    def sample_once(self) -> Sample:
        t = time.monotonic()
        proc = subprocess.run(self._argv, capture_output=True, text=True, timeout=5, stdin=subprocess.DEVNULL)
        tcp_text, _, rest = proc.stdout.partition("@@MPTCP@@")
        mptcp_text, _, rest = rest.partition("@@PEER@@")
        peer_text, *qdisc_texts = rest.split("@@QDISC@@")
        if proc.returncode != 0 and len(self.errors) < 10:
            self.errors.append(proc.stderr.strip()[:300])
        # the midpoint of the call is when the counters were read, near enough
        mid = (t + time.monotonic()) / 2
        qdisc = {host: parse_qdisc(text) for host, text in zip(self.qdisc_hosts, qdisc_texts)}
        return Sample(mid, [r for r in parse_ss(tcp_text) if r["mptcp"]], parse_ss(mptcp_text), qdisc,
                      [r for r in parse_ss(peer_text) if r["mptcp"]])

    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            try:
                self.samples.append(self.sample_once())
            except (subprocess.SubprocessError, OSError) as exc:
                if len(self.errors) < 10:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
            next_t += self.interval
            delay = next_t - time.monotonic()
            if delay < 0:  # fell behind: do not try to catch up with a burst
                next_t = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    def start(self) -> "Sampler":
        self._thread = threading.Thread(target=self._run, name="handover-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def intervals(self) -> dict[str, float | None]:
        ts = [s.t for s in self.samples]
        gaps = [b - a for a, b in zip(ts, ts[1:])]
        if not gaps:
            return {"count": len(ts), "mean": None, "max": None}
        return {"count": len(ts), "mean": sum(gaps) / len(gaps), "max": max(gaps)}


def queue_series(samples: list[Sample], t0: float, host: str, rates_mbps: dict[str, float | None],
                 t_from: float, t_to: float) -> dict[str, Any]:
    """Backlog of `host`'s shaped interfaces over time, as queueing delay (ms = backlog * 8 / rate), and its mean
    between t_from and t_to (relative to t0)."""
    out: dict[str, Any] = {}
    for dev, rate in rates_mbps.items():
        if not rate:
            continue
        ts, ms = [], []
        for s in samples:
            q = s.qdisc.get(host, {}).get(dev)
            if q is not None:
                ts.append(s.t - t0)
                ms.append(q["backlog"] * 8 / (rate * 1e6) * 1000)
        inside = [m for t, m in zip(ts, ms) if t_from <= t <= t_to]
        out[dev] = {"t": ts, "delay_ms": ms, "mean_ms": sum(inside) / len(inside) if inside else None,
                    "rate_mbps": rate}
    return out


def subflow_series(samples: list[Sample], t0: float, counter: str, port: int) -> dict[str, Any]:
    """Goodput per subflow (4-tuple) of the connection on `port` (the mobile's remote port).

    Returns {'t': [...], 'subflows': {key: {'local', 'remote', 'mbps': [...], 'bytes': [...], 'first', 'last'}},
    'created': [...], 'closed': [...]} with times relative to t0; `mbps[i]` is the rate between sample i-1 and i.
    """
    ts = [s.t - t0 for s in samples]
    series: dict[str, dict[str, Any]] = {}
    created: list[dict[str, Any]] = []
    closed: list[dict[str, Any]] = []
    alive: set[str] = set()
    last_val: dict[str, int] = {}
    for i, s in enumerate(samples):
        now_alive: set[str] = set()
        for row in s.subflows:
            if not row["remote"].endswith(f":{port}"):
                continue
            key = f"{row['local']}->{row['remote']}"
            if row["state"] != "ESTAB":
                continue
            now_alive.add(key)
            entry = series.get(key)
            if entry is None:
                entry = series[key] = {"local": row["local"], "remote": row["remote"], "mbps": [0.0] * len(ts),
                                       "bytes": [None] * len(ts), "first": ts[i], "last": ts[i],
                                       "backup": row.get("backup_flag", False), "cc": row.get("cc"),
                                       "retrans": 0, "max_backoff": 0,
                                       "max_rto_ms": 0}
                created.append({"t": ts[i], "subflow": key})
            value = row.get(counter, 0)
            entry["bytes"][i] = value
            entry["retrans"] = max(entry["retrans"], row.get("retrans_total", 0))
            entry["max_backoff"] = max(entry["max_backoff"], row.get("backoff", 0))
            entry["max_rto_ms"] = max(entry["max_rto_ms"], row.get("rto", 0))
            if key in last_val and i > 0:
                dt = ts[i] - ts[i - 1]
                if dt > 0:
                    entry["mbps"][i] = max(0, value - last_val[key]) * 8 / dt / 1e6
            last_val[key] = value
            entry["last"] = ts[i]
        for key in alive - now_alive:
            closed.append({"t": ts[i], "subflow": key})
            last_val.pop(key, None)
        alive = now_alive
    return {"t": ts, "subflows": series, "created": created, "closed": closed, "counter": counter}


PEER_FIELDS = ("cwnd", "unacked", "backoff", "retrans_total", "rto", "notsent", "lost")


def peer_series(samples: list[Sample], t0: float, port: int) -> dict[str, dict[str, Any]]:
    """The other end's view of each subflow of the connection on `port` (its local port), keyed like
    `subflow_series` (mobile 4-tuple): {key: {'t': [...], field: [...]}} for PEER_FIELDS."""
    out: dict[str, dict[str, Any]] = {}
    for s in samples:
        for row in s.peer_subflows:
            if not row["local"].endswith(f":{port}") or row["state"] != "ESTAB":
                continue
            key = f"{row['remote']}->{row['local']}"
            entry = out.setdefault(key, {"t": [], "cc": row.get("cc"), **{f: [] for f in PEER_FIELDS}})
            entry["t"].append(round(s.t - t0, 3))
            for f in PEER_FIELDS:
                entry[f].append(row.get(f, 0))
    return out
