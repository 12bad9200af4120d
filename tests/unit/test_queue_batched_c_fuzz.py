"""The batched NFQUEUE helper's netlink parser (mptcrypt/daemon/_nfq.c, recv_batch) on malformed message
framing, fed through an AF_UNIX datagram socketpair (recvmmsg reads any datagram socket). Every run happens in a
child process with an address-space limit and a timeout: a parser that loops or runs away must fail the test,
never take the machine's memory (one such run did, before these limits).

The kernel is the only sender a real queue socket hears from (or a CAP_NET_ADMIN process: nothing checks the
sender's port id), so these are robustness findings, not remote ones."""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap

import pytest

try:
    from mptcrypt.daemon import _nfq  # noqa: F401
except ImportError as exc:
    pytest.skip(f"extension mptcrypt.daemon._nfq not built ({exc})", allow_module_level=True)

LIMIT = 1 << 30  # bytes of address space for the child


def limited():
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


def run_child(code: str, timeout: float = 60) -> tuple[int, str, str]:
    prelude = textwrap.dedent("""
        import random, socket, struct
        from mptcrypt.daemon import _nfq
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        PACKET = (3 << 8) | 0  # NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET

        def attr(t, data):
            n = 4 + len(data)
            return struct.pack("=HH", n, t) + data + bytes(-n % 4)

        def message(attrs, nlmsg_len=None, kind=PACKET):
            body = struct.pack("=BBH", 2, 0, 0) + attrs
            return struct.pack("=IHHII", 16 + len(body) if nlmsg_len is None else nlmsg_len, kind, 0, 0, 0) + body

        def packet_hdr(pid, hook=1):
            return attr(1, struct.pack("!IHB", pid, 0x0800, hook))
    """)
    try:
        child = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True,
                               text=True, timeout=timeout, preexec_fn=limited)
    except subprocess.TimeoutExpired:
        return -1, "", "timed out"
    return child.returncode, child.stdout, child.stderr


def test_well_formed_batches_parse():
    rc, out, err = run_child("""
        a.send(message(packet_hdr(7) + attr(10, b"E" + bytes(39))) + message(packet_hdr(8)))
        a.send(message(packet_hdr(9) + attr(10, b"x" * 1500)))
        got = _nfq.recv_batch(b.fileno(), 64)
        print([(i, h, None if p is None else len(p)) for i, h, p in got])
    """)
    assert (rc, out.strip()) == (0, "[(7, 1, 40), (8, 1, None), (9, 1, 1500)]"), err[-500:]


@pytest.mark.parametrize("nlmsg_len", [0xFFFFFFFD, 0xFFFFFFFF])
def test_a_huge_nlmsg_len_ends_the_parse(nlmsg_len):
    rc, out, err = run_child(f"""
        a.send(message(packet_hdr(7), nlmsg_len={nlmsg_len}))
        got = _nfq.recv_batch(b.fileno(), 1)
        print(len(got) <= 1)
    """, timeout=20)
    assert (rc, out.strip()) == (0, "True"), err[-300:]


def test_nlmsg_len_beyond_the_datagram_does_not_read_stale_bytes():
    rc, out, err = run_child("""
        a.send(message(packet_hdr(1) + attr(10, b"OLD PLAINTEXT " * 8)))
        _nfq.recv_batch(b.fileno(), 1)
        short = message(packet_hdr(2))
        a.send(short[:0] + struct.pack("=I", len(short) + 200) + short[4:])
        print(_nfq.recv_batch(b.fileno(), 1))
    """, timeout=20)
    assert rc == 0 and "OLD PLAINTEXT" not in out and out.strip() in ("[]", "[(2, 1, None)]"), (out, err[-300:])


def test_random_framing_is_survived():
    """Random message lengths (the wrapping ones above left out), attribute lengths, types and truncation, for a
    bounded number of datagrams: no crash, no runaway, only (id, hook, bytes or None) tuples."""
    rc, out, err = run_child("""
        rng = random.Random(1234)
        total = 0
        for _ in range(3000):
            attrs = b""
            for _ in range(rng.randrange(0, 5)):
                t = rng.choice([1, 10, rng.randrange(0, 40)])
                data = rng.randbytes(rng.choice([0, 3, 7, 20, 1500, rng.randrange(0, 9000)]))
                attrs += attr(t, data) if rng.random() < 0.9 else struct.pack("=HH", rng.getrandbits(16), t) + data
            m = message(attrs)
            if rng.random() < 0.3:
                n = rng.choice([0, 1, 15, 16, 19, len(m) - 1, len(m) + 1, len(m) + 4000, rng.getrandbits(31)])
                m = struct.pack("=I", n) + m[4:]
            if rng.random() < 0.1:
                m = m[:rng.randrange(len(m) + 1)]
            a.send(m * rng.randrange(1, 3))
            for pid, hook, payload in _nfq.recv_batch(b.fileno(), rng.choice([1, 64])):
                assert isinstance(pid, int) and isinstance(hook, int) and (payload is None or isinstance(payload, bytes))
                total += 1
        print("ok", total > 0)
    """, timeout=120)
    assert (rc, out.split()[:2]) == (0, ["ok", "True"]), err[-500:]
