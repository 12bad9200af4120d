"""Handover simulation: scenario parsing (no root), then one short scenario for plain MPTCP and mptcrypt (root).

The root test plays a ~10 s timeline on topologies/handover.py: Wi-Fi down, back 2 s later on a new network
with a new address (a new subflow must join there), once without and once with the daemons, and checks what
issue 6 asks: data intact, the new path's subflow established (and protected, under mptcrypt), no public-key
operation after the first handshake, one session ID for the whole run, a bounded stall, a new plain TCP
connection from the new address that resumes the session, and the PNG and JSON with their series.
"""

from __future__ import annotations

import json
import os

import pytest

from mptcrypt.errors import ConfigError
from mptcrypt.handover.report import STALL_BOUND_S, checks
from mptcrypt.handover.sampler import Sample, parse_ss, subflow_series
from mptcrypt.handover.scenario import load_scenario, parse_scenario, scenario_files

SHIPPED = {"walk-out-of-wifi", "flapping-wifi", "wifi-to-new-wifi", "make-before-break", "break-before-make"}

SHORT = """
name = "short-new-wifi"
description = "test: Wi-Fi down, back on a new network with a new address"
duration = 7.0
direction = "down"
topo = { wifi_bw = 20, lte_bw = 10, wifi_delay = "none", lte_delay = "none" }
expect = { new_path = "wifi" }
events = [
  { at = 1.5, action = "down", intf = "wifi" },
  { at = 3.5, action = "up", intf = "wifi", addr = "10.0.3.2/24", server_addr = "10.0.3.1/24" },
]
"""


# --- no root -------------------------------------------------------------------------------------------------


def test_shipped_scenarios_parse():
    names = set(scenario_files())
    assert SHIPPED <= names
    for name in names:
        sc = load_scenario(name)
        assert sc.events and all(0 <= e.at <= sc.duration for e in sc.events)
        assert [e.at for e in sc.events] == sorted(e.at for e in sc.events)


@pytest.mark.parametrize("bad, message", [
    ({"events": [{"at": 1, "action": "explode", "intf": "wifi"}]}, "unknown action"),
    ({"events": [{"at": 1, "action": "down", "intf": "eth0"}]}, "intf must be"),
    ({"events": [{"at": 99, "action": "down", "intf": "wifi"}]}, "between"),
    ({"events": [{"action": "down", "intf": "wifi"}]}, "missing `at`"),
    ({"events": [{"at": 1, "action": "degrade", "intf": "wifi"}]}, "loss"),
    ({"events": [{"at": 1, "action": "degrade", "intf": "lte", "delay": "slow"}]}, "expected a time"),
    ({"topo": {"lte_delay": "none"}, "events": [{"at": 1, "action": "degrade", "intf": "lte", "delay": "90ms"}]},
     "no delay line"),
    ({"events": [{"at": 1, "action": "addr", "intf": "lte", "addr": "10.0.2.9"}]}, "prefix length"),
    ({"events": [{"at": 1, "action": "up", "intf": "wifi", "addr": "10.0.3.2/24", "gw": "10.0.4.1"}]}, "not on"),
    ({"events": [{"at": 1, "action": "down", "intf": "wifi", "bw": 3}]}, "unknown field"),
    ({"direction": "sideways", "events": [{"at": 1, "action": "down", "intf": "wifi"}]}, "direction"),
    ({"events": []}, "no [[events]]"),
])
def test_bad_scenarios_are_refused_with_a_reason(bad, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_scenario(bad, "bad")


def test_degrade_changes_the_delay_lines_and_restore_puts_the_topology_back():
    """`degrade` takes delay / jitter (one way, each direction) like loss and bw; `restore` sets the topology's
    values again, the delay too once a degrade changed it. A recording stand-in for `Net`: no root."""
    from mptcrypt.handover.runner import Run, RunState

    sc = parse_scenario({"events": [
        {"at": 1, "action": "degrade", "intf": "lte", "delay": "90ms", "jitter": 5, "bw": 4},
        {"at": 2, "action": "restore", "intf": "lte"},
        {"at": 3, "action": "degrade", "intf": "wifi", "loss": 2},
        {"at": 4, "action": "restore", "intf": "wifi"},
    ]}, "delay-change")
    assert (sc.events[0].delay, sc.events[0].jitter) == (90.0, 5.0)
    assert sc.events[0].describe() == "lte degraded (4 Mbit/s, delay 90 ms, jitter 5 ms)"
    calls = []

    class RecordingNet:
        def set_link(self, a, b, intf=None, **params):
            calls.append((intf, params))

    run = Run(sc, "plain", "/nonexistent")
    run.net = RecordingNet()
    topology = {"bw": 10.0, "loss": 0.0, "delay": 40.0, "jitter": 0.0}
    run.state = RunState(addrs={}, initial={}, shaping={"lte": topology, "wifi": {**topology, "delay": 10.0}})
    for ev in sc.events:
        run.apply(ev)
    assert calls == [
        ("lte", {"bw": 4.0, "delay": 90.0, "jitter": 5.0}),
        ("lte", topology),
        ("wifi", {"loss": 2.0}),
        ("wifi", {"bw": 10.0, "loss": 0.0}),  # its delay was never changed: its delay line is left alone
    ]


def test_unknown_scenario_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="walk-out-of-wifi"):
        load_scenario("no-such-scenario")


def test_ss_parsing_and_per_subflow_goodput():
    line1 = ("ESTAB 0 0 10.0.1.2:40000 10.0.1.1:5201 ts sack cubic bytes_sent:100 bytes_acked:1000 "
             "bytes_received:5000 segs_out:9 tcp-ulp-mptcp flags:Mmec token:0000(id:0)/1(id:0) seq:1 sfseq:1")
    line2 = ("ESTAB 0 0 10.0.2.2%lte:40001 10.0.1.1:5201 cubic bytes_acked:10 bytes_received:0 "
             "tcp-ulp-mptcp flags:Jjecvb token:0(id:2)/0(id:0)")
    rows = parse_ss(line1 + "\n" + line2 + "\nESTAB 0 0 10.0.1.2:40002 10.0.1.1:22 cubic bytes_acked:1\n")
    assert [r["local"] for r in rows] == ["10.0.1.2:40000", "10.0.2.2:40001", "10.0.1.2:40002"]
    assert rows[0]["bytes_received"] == 5000 and rows[0]["mptcp"] and not rows[0]["backup_flag"]
    assert rows[1]["backup_flag"] and not rows[2]["mptcp"]
    samples = [
        Sample(10.0, [dict(rows[0], bytes_received=0)]),
        Sample(10.1, [dict(rows[0], bytes_received=125_000), dict(rows[1], bytes_received=0)]),
        Sample(10.2, [dict(rows[1], bytes_received=12_500)]),
    ]
    s = subflow_series(samples, 10.0, "bytes_received", 5201)
    first = s["subflows"]["10.0.1.2:40000->10.0.1.1:5201"]
    assert first["mbps"][1] == pytest.approx(10.0)
    assert s["subflows"]["10.0.2.2:40001->10.0.1.1:5201"]["mbps"][2] == pytest.approx(1.0)
    assert [c["subflow"] for c in s["created"]] == ["10.0.1.2:40000->10.0.1.1:5201", "10.0.2.2:40001->10.0.1.1:5201"]
    assert s["closed"] == [{"t": pytest.approx(0.2), "subflow": "10.0.1.2:40000->10.0.1.1:5201"}]


def test_cli_registers_the_handover_subcommand(capsys):
    import argparse

    from mptcrypt.handover.cli import register

    parser = argparse.ArgumentParser(prog="mptcrypt")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["handover", "flapping-wifi", "--target", "plain", "--out", "/tmp/x", "--json"])
    assert (args.scenario, args.target, args.out, args.json) == ("flapping-wifi", "plain", "/tmp/x", True)
    args = parser.parse_args(["handover", "--list"])
    assert args.func(args) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in SHIPPED)


# --- root: one short scenario, both targets ---------------------------------------------------------------


@pytest.mark.root
def test_short_handover_plain_and_mptcrypt(tmp_path):
    import tomllib

    from mptcrypt.handover.cli import brief
    from mptcrypt.handover.plot import plot_summary
    from mptcrypt.handover.runner import run_scenario

    scenario = parse_scenario(tomllib.loads(SHORT), "short-new-wifi")
    logs: list[str] = []
    summary = run_scenario(scenario, ["plain", "mptcrypt"], str(tmp_path), log=logs.append)
    png = plot_summary(summary, str(tmp_path / "short.png"))
    json_path = tmp_path / "short.json"
    json_path.write_text(json.dumps(summary))
    report = json.dumps(brief(summary), indent=1)[:6000]

    for target in ("plain", "mptcrypt"):
        run = summary["targets"][target]
        assert run["ok"], f"{target}: {run.get('error')}\n{logs}"
        bulk = run["bulk"]
        assert bulk["intact"], f"{target}: data not intact: {bulk}"
        assert bulk["bytes_received"] > 1_000_000, report
        assert run["new_path"]["established"], f"{target}: no subflow from 10.0.3.2\n{report}"
        assert run["new_path"]["addr"] == "10.0.3.2"
        assert run["stall_s"] < STALL_BOUND_S, f"{target}: stall {run['stall_s']:.2f} s\n{report}"
        assert run["latency_ms"]["count"] > 100 and run["latency_ms"]["p50"] is not None
        assert run["resume"].get("echo_ok"), run["resume"]
        assert run["resume"]["local"].startswith("10.0.3.2:")
        # the sampler kept its cadence (a broken one samples once a second or stops); 2x slack for a loaded machine,
        # where 0.125 s against 0.1 was seen: this checks the sampler, not the machine's speed
        assert run["sampler"]["mean"] <= 2 * run["sampler"]["interval_target"], run["sampler"]

    crypto = summary["targets"]["mptcrypt"]["crypto"]
    new_path = summary["targets"]["mptcrypt"]["new_path"]
    assert new_path["protected"], f"new-path subflow not protected: {new_path}"
    assert any(r["local"].startswith("10.0.3.2:") and r["kind"] == "join" and r["state"] == "encrypting"
               for r in new_path["daemon_rows"]), new_path  # while the transfer ran
    assert any(r["local"].startswith("10.0.3.2:") and r["kind"] == "join" and r["state"] in ("encrypting", "closed")
               for r in crypto["final_bulk_subflows"]), crypto["final_bulk_subflows"]  # after it
    assert crypto["pk_ops_first_handshake"] == {"mobile": 1, "server": 1}, crypto
    assert crypto["pk_ops_after_first"] == {"mobile": 0, "server": 0}, crypto
    assert crypto["sid_unchanged"] and isinstance(crypto["sid"], str) and len(crypto["sid"]) == 64, crypto
    assert crypto["sid_server"] == crypto["sid"]
    assert crypto["sid_samples"] >= 10
    assert crypto["joins_protected"]["mobile"] >= 1 and crypto["joins_protected"]["server"] >= 1
    resume = summary["targets"]["mptcrypt"]["resume"]
    assert resume["resumed"], resume
    assert resume["resumptions_delta"] == {"mobile": 1, "server": 1}
    assert resume["pk_ops_since_first"] == {"mobile": 0, "server": 0}
    assert resume["session_row"]["resumed"] and resume["session_row"]["sid"] != crypto["sid"]
    failed = {t: [k for k, v in checks(summary["targets"][t]).items() if v is False] for t in ("plain", "mptcrypt")}
    assert failed == {"plain": [], "mptcrypt": []}

    # the files hold the recorded series
    assert os.path.getsize(png) > 20_000
    with open(png, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(json_path.read_text())
    for target in ("plain", "mptcrypt"):
        series = saved["targets"][target]["series"]
        n = len(series["t"])
        assert n >= 60  # 7 s + settle at <= 100 ms
        assert len(series["subflows"]) >= 2
        assert all(len(sf["mbps"]) == n for sf in series["subflows"].values())
        assert any(max(sf["mbps"]) > 1 for sf in series["subflows"].values())
        assert len(series["latency"]) > 100 and len(series["app_t"]) == len(series["app_mbps"]) > 50
        assert [e["what"] for e in saved["targets"][target]["events"]] == ["wifi down", "wifi up 10.0.3.2"]


@pytest.mark.root
def test_short_handover_through_port_rewriting_nat(tmp_path):
    """Issue 13 item 6: the same timeline with both networks rewriting the mobile's source ports (`nat = true`,
    MASQUERADE --random-fully as carrier NAT does): under mptcrypt the data stays intact, the new path joins
    protected with no public-key operation, and the new connection from the new address resumes."""
    import tomllib

    from mptcrypt.handover.runner import run_scenario

    scenario = parse_scenario(tomllib.loads(SHORT.replace('lte_delay = "none"', 'lte_delay = "none", nat = true')),
                              "short-new-wifi-nat")
    assert scenario.topo_args["nat"] is True
    summary = run_scenario(scenario, ["mptcrypt"], str(tmp_path), log=lambda m: None)
    run = summary["targets"]["mptcrypt"]
    assert run["ok"], run.get("error")
    assert run["bulk"]["intact"] and run["bulk"]["bytes_received"] > 1_000_000, run["bulk"]
    assert run["new_path"]["established"] and run["new_path"]["protected"], run["new_path"]
    crypto = run["crypto"]
    assert crypto["joins_protected"]["mobile"] >= 1 and crypto["joins_protected"]["server"] >= 1, crypto
    assert crypto["pk_ops_after_first"] == {"mobile": 0, "server": 0}, crypto
    assert crypto["sid_unchanged"] and crypto["sid_server"] == crypto["sid"], crypto
    assert run["resume"]["resumed"] and run["resume"]["pk_ops_since_first"] == {"mobile": 0, "server": 0}, run["resume"]
