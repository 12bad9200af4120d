"""The PNG of a handover run: goodput per subflow over time with the link events, and request latency.

One column per target (plain MPTCP | mptcrypt side by side when both ran), two rows: goodput (Mbit/s) of each
subflow of the bulk connection, the application's goodput (dashed) and the longest stall (shaded); below it the
latency of each request (ms, log scale). Link events are vertical lines in both rows. Matplotlib's Agg backend:
no display needed.
"""

from __future__ import annotations

from typing import Any

SMOOTH_BINS = 3
TITLES = {"plain": "plain MPTCP", "mptcrypt": "mptcrypt"}
INTF_COLORS = {"wifi": ["#1f77b4", "#17becf", "#9467bd", "#2ca02c"], "lte": ["#ff7f0e", "#d62728", "#8c564b"],
               "?": ["#7f7f7f"]}


def _colors(subflows: dict[str, Any]) -> dict[str, str]:
    used: dict[str, int] = {}
    out = {}
    for key, sf in sorted(subflows.items(), key=lambda kv: kv[1]["first"]):
        palette = INTF_COLORS.get(sf.get("intf", "?"), INTF_COLORS["?"])
        i = used.get(sf.get("intf", "?"), 0)
        used[sf.get("intf", "?")] = i + 1
        out[key] = palette[i % len(palette)]
    return out


def plot_summary(summary: dict[str, Any], path: str) -> str:
    """Draw `summary` (runner.run_scenario's result) into `path` (PNG). Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenario = summary["scenario"]
    runs = [(t, r) for t, r in summary["targets"].items() if r.get("ok")]
    ncol = max(1, len(runs))
    fig, axes = plt.subplots(2, ncol, figsize=(7.5 * ncol, 7.8), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [2.2, 1]})
    ymax = 1.0
    for col, (target, run) in enumerate(runs):
        ax, lax = axes[0][col], axes[1][col]
        s = run["series"]
        t = s["t"]
        colors = _colors(s["subflows"])
        for key, sf in sorted(s["subflows"].items(), key=lambda kv: kv[1]["first"]):
            xs = [x for x, y in zip(t, sf["mbps"]) if sf["first"] <= x <= sf["last"]]
            ys = [y for x, y in zip(t, sf["mbps"]) if sf["first"] <= x <= sf["last"]]
            ax.plot(xs, ys, color=colors[key], lw=1.4, label=sf["label"])
            ymax = max([ymax, *ys])
        if s.get("app_t"):
            app = _smooth(s["app_mbps"], SMOOTH_BINS)
            ax.plot(s["app_t"], app, color="black", lw=1.0, ls="--", alpha=0.7,
                    label=f"application ({SMOOTH_BINS * 100} ms mean)")
            ymax = max([ymax, *app])
        if run.get("stall_at") is not None and run.get("stall_s"):
            ax.axvspan(run["stall_at"], run["stall_at"] + run["stall_s"], color="red", alpha=0.12,
                       label=f"longest stall {run['stall_s'] * 1000:.0f} ms")
        lat = s.get("latency") or []
        if lat:
            lax.scatter([p[0] for p in lat], [max(p[1], 0.1) for p in lat], s=3, color="#444444")
            lax.set_yscale("log")
        for a in (ax, lax):
            for ev in run.get("events", []):
                if ev.get("t") is None:
                    continue
                a.axvline(ev["t"], color="#555555", ls=":", lw=1)
            a.set_xlim(-run["timeline"].get("settle", 1.0), run["duration"] + 0.5)
            a.grid(alpha=0.25)
        lm = run.get("latency_ms", {})
        crypto = run.get("crypto")
        sub = (f"stall {run.get('stall_s', 0) * 1000:.0f} ms, p50/p99 {_ms(lm.get('p50'))}/{_ms(lm.get('p99'))} ms, "
               f"{run['subflows']['created_count']} subflows")
        if crypto:
            sub += f", PK ops after 1st handshake {sum(crypto['pk_ops_after_first'].values())}"
        ax.set_title(f"{TITLES.get(target, target)}\n{sub}", fontsize=10)
        lax.set_xlabel("time since the timeline started (s)")
        handles, labels = ax.get_legend_handles_labels()  # below the figure: the top band holds the event labels
        lax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=3, fontsize=7,
                   frameon=False)
        if col == 0:
            ax.set_ylabel(f"goodput per subflow (Mbit/s, {s['counter']})")
            lax.set_ylabel("request latency (ms)")
    for col, (_target, run) in enumerate(runs):
        ax = axes[0][col]
        ax.set_ylim(0, ymax * 1.22)
        for ev in run.get("events", []):
            if ev.get("t") is not None:
                ax.text(ev["t"], ymax * 1.2, " " + ev["what"], rotation=90, va="top", ha="left", fontsize=7,
                        color="#333333")
    if not runs:
        axes[0][0].text(0.5, 0.5, "no successful run", ha="center", va="center")
    title = f"handover scenario {scenario['name']} ({scenario['direction']}link bulk transfer)"
    fig.suptitle(f"{title}\n{scenario.get('description', '')}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _smooth(values: list[float], n: int) -> list[float]:
    """Centred moving average over n bins (reads come in bursts: 100 ms bins alone are jagged)."""
    half = n // 2
    return [sum(values[max(0, i - half):i + half + 1]) / len(values[max(0, i - half):i + half + 1])
            for i in range(len(values))]


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"
