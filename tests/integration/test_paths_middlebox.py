"""Middleboxes that strip mptcrypt's option (kind 253) from SYNs, from data segments, from everything, or only once
the connection is up (issue 13 item 2). nat1 of topologies/nat.py (nat=none) is the middlebox on path 1.

Every connection ends one of three ways, and the test says which one it must be: `protected` (same session ID at
both ends, no plaintext on the wire), `plain` (no session ID, the reason in `sessions`) or `refused` (the connect
fails at once). Never `hung`: a source that cannot finish within the timeout."""

from __future__ import annotations

import time

import pytest

from pathkit import MARKER, PathNet, wait_for

pytestmark = pytest.mark.root

# INIT1 rides with the option too: stripped, the handshake cannot finish; give up after ~3 s, not ~25 s
FAST_GIVE_UP = "/tmp/mptc-paths-middlebox.toml"
PORTS = ("--ports", "5000-5099", "--config", FAST_GIVE_UP)
REQUIRED = (*PORTS, "--policy", "required")
NBYTES = 1 << 20
HANG = 12.0  # seconds without the transfer finishing: hung (a 1 MiB transfer takes well under a second here)


@pytest.fixture(scope="module", params=["none", "syn", "data", "all"])
def mbox(request):
    from conftest import netns_unavailable

    if netns_unavailable():
        pytest.skip(netns_unavailable())
    with open(FAST_GIVE_UP, "w") as fh:
        fh.write("init_retries = 3\ninit_rto = 0.2\n")
    pn = PathNet("nat.py", f"nat,nat=none,strip={request.param}", taps=("nat1",), daemon_args=PORTS)
    pn.strip = request.param
    yield pn
    pn.stop()


def outcome(pn, port, mptcp, timeout=HANG):
    t0 = time.monotonic()
    sent, got = pn.transfer("10.0.1.1", port, NBYTES, mptcp=mptcp, timeout=timeout)
    secs = time.monotonic() - t0
    if sent is None:
        return ("hung" if secs >= timeout else "refused"), None
    assert got["sha256"] == sent["sha256"] and got["bytes"] == NBYTES, "bytes changed"
    if sent["sid"] and sent["sid"] == got["sid"]:
        return "protected", sent
    assert not sent["sid"] and not got["sid"], f"half-protected: {sent['sid']} / {got['sid']}"
    return "plain", sent


def reasons(pn, port):
    return {h: (pn.row(h, port) or {}).get("reason") for h in ("client", "server")}


@pytest.mark.parametrize("mptcp", [False, True], ids=["tcp", "mptcp"])
def test_opportunistic_is_protected_or_cleanly_plain(mbox, mptcp):
    port = 5010 + mptcp
    mbox.clear_taps()
    result, _ = outcome(mbox, port, mptcp)
    if mbox.strip == "none":  # a router that leaves options alone: protected end to end
        assert result == "protected", result
        assert not any(t.contains(MARKER.encode()) for t in mbox.taps)
    elif mbox.strip in ("syn", "all"):
        # the SYN's HELLO never arrives: the server's kernel sees a plain SYN, both daemons leave the flow alone
        assert result == "plain", result
        r = reasons(mbox, port)
        assert r["client"] and r["server"], r
    else:
        # HELLO/PKCONF pass, INIT1 loses its marker option: the handshake cannot finish and plain is too late (the
        # kernels agreed on the MAC-sized MSS and no timestamps): the client daemon resets, with the reason
        assert result == "refused", result
        assert "middlebox strips mptcrypt options" in (reasons(mbox, port)["client"] or ""), reasons(mbox, port)
    if mptcp and result == "plain":
        assert mbox.fallbacks("client") == mbox.fallbacks("server") == 0


def test_required_is_refused_never_leaked(mbox):
    mbox.clear_taps()
    for host in ("client", "server"):
        mbox.restart_daemon(host, *REQUIRED)
    try:
        result, _ = outcome(mbox, 5020, mptcp=False)
        assert result == ("protected" if mbox.strip == "none" else "refused"), result
        assert not any(t.contains(MARKER.encode()) for t in mbox.taps), "plaintext under policy required"
    finally:
        for host in ("client", "server"):
            mbox.restart_daemon(host, *PORTS)


def test_stripping_after_the_handshake_resets_with_a_reason(mbox):
    """The middlebox starts stripping mid-transfer (what MPTCP handles with MP_FAIL): no hang, a reset with a reason."""
    if mbox.strip != "none":
        pytest.skip("the router starts stripping during the transfer")
    pn = mbox
    pn.clear_taps()
    before = {h: pn.stats(h)["stripped_resets"] for h in ("client", "server")}
    try:
        def start_stripping(_source):
            assert wait_for(lambda: (pn.row("client", 5040) or {}).get("state") == "encrypting", timeout=10)
            pn["nat1"].run("iptables -t mangle -A FORWARD -p tcp --tcp-flags SYN NONE -j TCPOPTSTRIP "
                           "--strip-options 253")

        t0 = time.monotonic()
        sent, _ = pn.transfer("10.0.1.1", 5040, 256 << 20, mptcp=False, during=start_stripping, timeout=HANG)
        assert sent is None and time.monotonic() - t0 < HANG, "a stripped connection must end, not hang"
        assert "middlebox strips mptcrypt options" in (pn.row("client", 5040) or {}).get("reason", "")
        assert all(pn.stats(h)["stripped_resets"] == before[h] + 1 for h in before), "both sides reset"
        assert not any(t.contains(MARKER.encode()) for t in pn.taps)
    finally:
        pn["nat1"].run("iptables -t mangle -F FORWARD")
