"""In-memory engine cost per segment: protect (outbound data), verify (inbound data), pure ACK, through
`Engine.handle`, for this tree and for another tree (default: git `main`), in one run.

    .venv/bin/python bench/bench_engine.py [--n 3000] [--rounds 5] [--baseline main|PATH|none] [--json out.json]
        [--no-fast-off]

Two engines are keyed in memory (X25519, AES-128), then each case handles one 1448-byte segment (or pure ACK)
`--n` times per round (best of 5 batches, as a kernel retransmission would: same bytes, same ciphertext); the
median of `--rounds` rounds is reported in µs per segment. This tree runs twice: as selected (the compiled fast
path, core/datapath.FastPath, when built) and with MPTCRYPT_FAST_PATH=off (the Python engine per segment).
The baseline tree runs in a subprocess with the same script
(`git archive REV` into a temporary directory), the two processes alternate rounds so machine noise spreads. An
archived tree has no built extension, so it runs the Python segment path: give a built tree's directory as
--baseline to compare compiled with compiled.
Prints a table and one JSON object. Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CASES = ("protect", "verify", "pure_ack_out", "pure_ack_in")


def keyed_pair(c_addr: bytes = bytes((10, 0, 1, 2)), s_addr: bytes = bytes((10, 0, 1, 1)), **engine_kwargs):
    """Two engines keyed in memory (X25519, AES-128) on the flow c_addr:40000 -> s_addr:5000, and the kernel
    segments of the benchmark: (client engine, server engine, data segment, its wire form, pure ACK, its wire
    form). `engine_kwargs` go to both Engines (fast_path=False: the Python engine alone)."""
    from mptcrypt.core.config import Config
    from mptcrypt.core.engine import Engine
    from mptcrypt.core.events import Verdict
    from mptcrypt.wire.ip import build_ip_header
    from mptcrypt.wire.tcp import ACK, PSH, SYN, TCPHeader, TCPOption, encode_options, pad_options

    def seg(src, sport, dst, dport, seq, ack, flags, opts=(), payload=b""):
        tcp = TCPHeader(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags, 502,
                        options=pad_options(encode_options(list(opts))))
        body = tcp.encode(payload, src, dst)
        return build_ip_header(src, dst, len(body)) + body

    syn_opts = [TCPOption(2, b"\x05\xb4"), TCPOption(4), TCPOption(1), TCPOption(3, b"\x07")]
    try:
        eng = {"c": Engine(Config(), **engine_kwargs), "s": Engine(Config(), **engine_kwargs)}
    except TypeError:  # a tree from before the fast path: no such keyword, the Python engine anyway
        eng = {"c": Engine(Config()), "s": Engine(Config())}

    def through(side, pkt):  # kernel of `side` sends pkt; returns what the peer kernel gets
        other = "s" if side == "c" else "c"
        r = eng[side].handle(pkt, True, 0.0)
        wire = [r.packet or pkt] if r.verdict is Verdict.ACCEPT else []
        wire += r.inject
        got = []
        while wire:
            p = wire.pop(0)
            rr = eng[other].handle(p, False, 0.0)
            if rr.verdict is Verdict.ACCEPT:
                got.append(rr.packet or p)
            for inj in rr.inject:  # answers (INIT2) go back
                back = eng[side].handle(inj, False, 0.0)
                wire += back.inject
        return got

    through("c", seg(c_addr, 40000, s_addr, 5000, 100, 0, SYN, syn_opts))
    through("s", seg(s_addr, 5000, c_addr, 40000, 900, 101, SYN | ACK, syn_opts))
    through("c", seg(c_addr, 40000, s_addr, 5000, 101, 901, ACK))
    payload = os.urandom(1448)
    data = seg(c_addr, 40000, s_addr, 5000, 101, 901, ACK | PSH, (), payload)
    ack = seg(s_addr, 5000, c_addr, 40000, 901, 101 + 1448, ACK)
    c, s = eng["c"], eng["s"]
    wire_data = c.handle(data, True, 1.0).packet
    wire_ack = s.handle(ack, True, 1.0).packet
    assert s.handle(wire_data, False, 1.0).packet == data and c.handle(wire_ack, False, 1.0).packet == ack
    return c, s, data, wire_data, ack, wire_ack


def measure(n: int, fast_path: bool | None = None) -> dict[str, float]:
    """µs per segment of each case with the `mptcrypt` found on sys.path (fast_path False: without the compiled
    fast path)."""
    c, s, data, wire_data, ack, wire_ack = keyed_pair(**({} if fast_path is None else {"fast_path": fast_path}))
    cases = {
        "protect": lambda: c.handle(data, True, 1.0),
        "verify": lambda: s.handle(wire_data, False, 1.0),
        "pure_ack_out": lambda: s.handle(ack, True, 1.0),
        "pure_ack_in": lambda: c.handle(wire_ack, False, 1.0),
    }
    # the same segment again and again (a retransmission: same bytes, same ciphertext); best of 5 batches
    out = {name: min(timeit.repeat(f, number=max(1, n // 5), repeat=5)) / max(1, n // 5) * 1e6
           for name, f in cases.items()}
    assert s.stats()["mac_failures"] == 0 and c.stats()["mac_failures"] == 0
    return out


def child(args) -> None:
    sys.path.insert(0, args.child)
    print(json.dumps(measure(args.n)))


def run_round(tree: Path, n: int, env_extra: dict | None = None) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), **(env_extra or {})}
    out = subprocess.run([sys.executable, __file__, "--child", str(tree), "--n", str(n)], env=env, check=True,
                         capture_output=True, text=True, cwd=tree)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=3000, help="segments per case and round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--baseline", default="main", help="git revision or directory to compare with ('none': skip)")
    p.add_argument("--json", type=Path)
    p.add_argument("--no-fast-off", action="store_true",
                   help="skip the column of this tree with MPTCRYPT_FAST_PATH=off")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    trees = {"this tree": REPO}
    envs = {"fast path off": {"MPTCRYPT_FAST_PATH": "off"}}  # this tree again, without the compiled fast path
    if args.no_fast_off:
        envs = {}
    for name in envs:
        trees[name] = REPO
    tmp = None
    if args.baseline != "none":
        if Path(args.baseline).is_dir():
            trees[args.baseline] = Path(args.baseline).resolve()
        else:
            tmp = tempfile.TemporaryDirectory(prefix="mptc-bench-")
            archive = subprocess.run(["git", "-C", str(REPO), "archive", args.baseline, "mptcrypt"], check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp.name], input=archive, check=True)
            trees[args.baseline] = Path(tmp.name)
    samples = {name: {c: [] for c in CASES} for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            for case, us in run_round(tree, args.n, envs.get(name)).items():
                samples[name][case].append(us)
    result = {name: {c: round(statistics.median(v), 2) for c, v in cases.items()} for name, cases in samples.items()}
    result["params"] = {"n": args.n, "rounds": args.rounds, "baseline": args.baseline, "unit": "us/segment median"}
    names = list(trees)
    print(f"{'case':<14}" + "".join(f"{n:>15}" for n in names) +
          "".join(f"  {'ratio to ' + n:>20}" for n in names[1:]))
    for case in CASES:
        row = f"{case:<14}" + "".join(f"{result[n][case]:>15.2f}" for n in names)
        row += "".join(f"  {result[names[0]][case] / result[n][case]:>20.2f}" for n in names[1:])
        print(row)
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
