"""Checks and the terminal table of a handover summary."""

from __future__ import annotations

from typing import Any

STALL_BOUND_S = 5.0  # a generous bound: the checks flag a stall longer than this


def checks(run: dict[str, Any]) -> dict[str, bool | None]:
    """What a run must show. None: not applicable to this target/scenario."""
    if not run.get("ok"):
        return {"ran": False}
    out: dict[str, bool | None] = {
        "ran": True,
        "data intact (sha256)": run["bulk"]["intact"],
        f"stall < {STALL_BOUND_S:g} s": run["stall_s"] < STALL_BOUND_S,
        "new-path subflow established": (run["new_path"].get("established")
                                         if run["new_path"].get("expected") else None),
        "new connection from new address works": bool(run["resume"].get("echo_ok")),
    }
    crypto = run.get("crypto")
    if crypto:
        out["new-path subflow protected"] = (run["new_path"].get("protected")
                                             if run["new_path"].get("expected") else None)
        out["0 PK ops after first handshake"] = all(v == 0 for v in crypto["pk_ops_after_first"].values())
        out["session ID unchanged"] = crypto["sid_unchanged"]
        out["resumed from new address (no PK op)"] = run["resume"].get("resumed")
    return out


def all_passed(summary: dict[str, Any]) -> bool:
    return all(v is not False for run in summary["targets"].values() for v in checks(run).values())


def _f(v: Any, fmt: str = "{:.0f}") -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, (int, float)):
        return fmt.format(v)
    return str(v)


def rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    targets = list(summary["targets"])
    runs = [summary["targets"][t] for t in targets]
    table: list[list[str]] = []

    def add(name: str, fn) -> None:
        cells = []
        for run in runs:
            try:
                cells.append(fn(run) if run.get("ok") else "-")
            except (KeyError, TypeError):
                cells.append("-")
        table.append([name, *cells])

    add("goodput in timeline (Mbit/s)", lambda r: _f(r["bulk"]["goodput_mbps"], "{:.1f}"))
    add("bytes received", lambda r: _f(r["bulk"]["bytes_received"], "{:,}"))
    add("data intact (sha256)", lambda r: _f(r["bulk"]["intact"]))
    add("longest stall (ms)", lambda r: _f(r["stall_s"] * 1000)
        + (f" at {r['stall_at']:.1f} s" if r["stall_at"] is not None else ""))
    for q in ("p50", "p95", "p99", "max"):
        add(f"request latency {q} (ms)", lambda r, q=q: _f(r["latency_ms"][q], "{:.1f}"))
    add("bulk sender's queue before events (ms)", lambda r: " / ".join(
        f"{dev} {_f(v, '{:.0f}')}" for dev, v in r["queue_before_events_ms"].items()))
    add("requests answered / sent", lambda r: f"{r['latency_ms']['answered']} / {r['latency_ms']['requests_sent']}")
    add("  unanswered in timeline", lambda r: _f(r["latency_ms"]["unanswered"]))
    add("subflows created / closed", lambda r: f"{r['subflows']['created_count']} / {r['subflows']['closed_count']}")
    add("congestion control (subflows)", lambda r: ",".join(r.get("subflow_cc") or []))
    add("bulk subflows: TCP retransmits", lambda r: _f(sum(sf.get("retrans", 0)
                                                            for sf in r["series"]["subflows"].values()), "{:,}"))
    add("new-path subflow", lambda r: ", ".join(r["new_path"].get("subflows") or []) or
        ("-" if not r["new_path"].get("expected") else "NONE"))
    add("new-path subflow protected", lambda r: _f(r["new_path"].get("protected")))
    add("joins protected (mobile/server)",
        lambda r: "/".join(str(r["crypto"]["joins_protected"][h]) for h in ("mobile", "server"))
        if r.get("crypto") else "-")
    add("PK ops at 1st handshake (m/s)",
        lambda r: "/".join(str(r["crypto"]["pk_ops_first_handshake"][h]) for h in ("mobile", "server"))
        if r.get("crypto") else "-")
    add("PK ops after it (m/s)",
        lambda r: "/".join(str(r["crypto"]["pk_ops_after_first"][h]) for h in ("mobile", "server"))
        if r.get("crypto") else "-")
    add("session ID", lambda r: (str(r["crypto"]["sid"])[:16] + ("…" if r["crypto"]["sid_unchanged"] else " CHANGED"))
        if r.get("crypto") else "-")
    add("new TCP conn from", lambda r: r["resume"].get("local") or r["resume"].get("error") or "-")
    add("  resumed (resumptions +1, 0 PK)", lambda r: _f(r["resume"].get("resumed")) if r.get("crypto") else "-")
    add("sampler interval mean/max (ms)",
        lambda r: f"{r['sampler']['mean'] * 1000:.0f}/{r['sampler']['max'] * 1000:.0f}")
    add("checks", lambda r: "pass" if all(v is not False for v in checks(r).values())
        else "FAIL: " + ", ".join(k for k, v in checks(r).items() if v is False))
    for t, run in zip(targets, runs):
        if not run.get("ok"):
            table.append([f"{t} error", *[(run.get("error") or "")[:80] if x is run else "" for x in runs]])
    return ["", *targets], table


def print_table(summary: dict[str, Any], file=None) -> None:
    header, table = rows(summary)
    name = summary["scenario"]["name"]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text
        widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
        print(f"handover {name}", file=file)
        for r in [header, *table]:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)), file=file)
        return
    t = Table(title=f"handover: {name} ({summary['scenario']['direction']}link)", header_style="bold")
    t.add_column("")
    for h in header[1:]:
        t.add_column(h, justify="right")
    for r in table:
        t.add_row(*r)
    Console(file=file, width=max(100, 40 + 28 * (len(header) - 1))).print(t)
