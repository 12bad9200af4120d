"""`mptcrypt monitor`: event records, the control socket's subscription, the readable line."""

from __future__ import annotations

import os
import selectors
import threading
import time

from mptcrypt.daemon.config import DaemonConfig
from mptcrypt.core.events import Event
from mptcrypt.daemon import control as control_mod
from mptcrypt.daemon.control import ControlServer
from mptcrypt.daemon.main import Daemon
from mptcrypt.daemon.monitor import event_record, format_record, stream

FLOW = "10.0.1.2:40000 > 10.0.1.1:5000"


def test_event_record_names():
    names = [event_record(Event(kind, FLOW, detail), now=1.5)["event"] for kind, detail in [
        ("protected", "new index 0 sid 7ce6ad94f51b9c92"), ("protected", "join index 1 sid 7ce6ad94f51b9c92"),
        ("protected", "resumed index 2 sid e82dddf1503b04b9"), ("join-refused", "join SYN without a valid NEXTK1"),
        ("mac-failure", "4 so far; segment dropped")]]
    assert names == ["protected", "join-protected", "resumption", "join-refused", "mac-failure"]
    rec = event_record(Event("protected", FLOW, "new index 0 sid ab"), now=1.5)
    assert rec == {"time": 1.5, "event": "protected", "kind": "protected", "flow": FLOW, "detail": "new index 0 sid ab"}
    assert format_record(rec).split()[1:] == ["protected", "10.0.1.2:40000", ">", "10.0.1.1:5000", "new", "index", "0",
                                              "sid", "ab"]


def test_monitor_streams_published_events_and_is_never_reaped():
    name = f"\0mptcrypt-test-monitor-{os.getpid()}"
    daemon = Daemon(DaemonConfig(), engine=object())
    clock = [0.0]
    server = ControlServer(daemon.handle_request, name, clock=lambda: clock[0])
    server.bind()
    selector = selectors.DefaultSelector()
    server.attach(selector)
    got = []

    def client():
        for record in stream(name):
            got.append(record)
            if len(got) == 2:
                return

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    published = False
    while thread.is_alive() and time.monotonic() < deadline:
        for key, mask in selector.select(0.05):
            key.data(mask)
        if not published and any(c.subscribed for c in server.clients.values()):
            clock[0] += control_mod.CLIENT_IDLE * 2
            server.tick()  # an idle subscriber stays
            server.publish([event_record(Event("protected", FLOW, "new index 0 sid ab"), now=2.0),
                            event_record(Event("mac-failure", FLOW, "1 so far; segment dropped"), now=3.0)])
            published = True
    server.close()
    selector.close()
    assert [(r["event"], r["time"]) for r in got] == [("protected", 2.0), ("mac-failure", 3.0)]


def test_publish_without_subscribers_does_nothing():
    server = ControlServer(lambda r: {"ok": True}, "\0unused")
    server.publish([{"event": "x"}])  # no socket, no clients: no error
