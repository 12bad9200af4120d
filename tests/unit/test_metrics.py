"""Prometheus exposition (daemon/metrics.py), parsed back with prometheus_client's own text parser."""

from __future__ import annotations

import selectors
import threading
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mptcrypt.daemon.config import DaemonConfig
from mptcrypt.daemon.main import Daemon
from mptcrypt.daemon.metrics import LatencyHistogram, MetricsServer, exposition, parse_listen
from mptcrypt.daemon.nfqueue import QueueWorker
from mptcrypt.errors import ConfigError

ENGINE = {"segments_protected": 120, "segments_verified": 118, "mac_failures": 3, "joins_protected": 1,
          "joins_refused": 2, "pk_ops": 1, "flows": 4, "connections": 2}
EDGE = {"nfq_packets": 250, "nfq_dropped": 5, "nfq_queue_full": 7, "nfq_socket_overflow": 0, "nfq_truncated": 1,
        "nfq_engine_errors": 0}
ROWS = [{"state": "encrypting"}, {"state": "encrypting"}, {"state": "plain"}]


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of every sample, via prometheus_client's parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def types(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def test_exposition_counters_gauges_states_histogram():
    hist = LatencyHistogram((1e-5, 1e-4))
    for seconds in (5e-6, 2e-5, 3e-5, 0.5):
        hist.observe(seconds)
    text = exposition(ENGINE, EDGE, ROWS, hist)
    got = samples(text)
    assert got[("mptcrypt_segments_protected_total", ())] == 120
    assert got[("mptcrypt_segments_verified_total", ())] == 118
    assert got[("mptcrypt_mac_failures_total", ())] == 3
    assert got[("mptcrypt_joins_protected_total", ())] == 1
    assert got[("mptcrypt_joins_refused_total", ())] == 2
    assert got[("mptcrypt_pk_ops_total", ())] == 1
    assert got[("mptcrypt_flows", ())] == 4
    assert got[("mptcrypt_nfq_packets_total", ())] == 250
    assert got[("mptcrypt_queue_drops_total", (("reason", "verdict"),))] == 5
    assert got[("mptcrypt_queue_drops_total", (("reason", "queue_full"),))] == 7
    assert got[("mptcrypt_queue_drops_total", (("reason", "truncated"),))] == 1
    assert got[("mptcrypt_connections_by_state", (("state", "encrypting"),))] == 2
    assert got[("mptcrypt_connections_by_state", (("state", "plain"),))] == 1
    assert got[("mptcrypt_packet_seconds_bucket", (("le", "1e-05"),))] == 1
    assert got[("mptcrypt_packet_seconds_bucket", (("le", "0.0001"),))] == 3
    assert got[("mptcrypt_packet_seconds_bucket", (("le", "+Inf"),))] == 4
    assert got[("mptcrypt_packet_seconds_count", ())] == 4
    assert got[("mptcrypt_packet_seconds_sum", ())] == pytest.approx(0.500055)
    t = types(text)
    assert t["mptcrypt_segments_protected"] == "counter" and t["mptcrypt_flows"] == "gauge"
    assert t["mptcrypt_packet_seconds"] == "histogram"


def test_parse_listen():
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:9464") == ("::1", 9464)
    for bad in ("localhost:9464", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:http"):
        with pytest.raises(ConfigError):
            parse_listen(bad)


class FakeEngine:
    name = "fake"

    def stats(self):
        return dict(ENGINE)

    def sessions(self):
        return list(ROWS)

    def handle(self, packet, outbound, now):
        raise AssertionError("no packet in this test")


def test_daemon_metrics_text_and_scrape():
    """The daemon's exposition served by MetricsServer from a selector loop, scraped over HTTP."""
    daemon = Daemon(DaemonConfig(), engine=FakeEngine())
    daemon.worker = QueueWorker(daemon.engine, 0, lambda _p: None)
    daemon.worker.latency.observe(3e-5)
    assert daemon.handle_request({"cmd": "metrics"})["text"] == daemon.metrics_text()
    server = MetricsServer(daemon.metrics_text, ("127.0.0.1", 0))
    server.bind()
    selector = selectors.DefaultSelector()
    server.attach(selector)
    result = {}

    def scrape():
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as resp:
            result["type"] = resp.headers["Content-Type"]
            result["body"] = resp.read().decode()

    thread = threading.Thread(target=scrape)
    thread.start()
    while thread.is_alive():
        for key, mask in selector.select(0.05):
            key.data(mask)
    server.close()
    selector.close()
    assert result["type"].startswith("text/plain; version=0.0.4")
    got = samples(result["body"])
    assert got[("mptcrypt_mac_failures_total", ())] == 3
    assert got[("mptcrypt_packet_seconds_count", ())] == 1
    assert got[("mptcrypt_nfq_packets_total", ())] == 0  # the worker's own counters, nothing queued
