#!/usr/bin/env python3
"""Per-segment cost of the segment-protection boundary (issue 14 target: <= 2 µs each for protect and verify).

One in-memory call of `SegmentCipher.seal` (protect: encrypt, MAC, MAC option appended, lengths and checksums)
and of `open` (verify: MAC checked, MAC option removed, decrypt, checksums) on a Linux MPTCP data segment: IPv4,
a 28-byte DSS option (with the MAC the option area is full) and a 1448-byte payload. The Python reference and the
compiled extension side by side, for both symmetric suites; medians of `--trials` trials of `--n` calls each.
`rows_timestamps` (second table): the same with Linux's timestamps option in front (NOP NOP TS + DSS, 40 bytes),
the segment every protected MPTCP flow sends since timestamps stay on: seal writes its compact form (28 bytes).

    python bench/bench_segment.py [--json out.json] [--n 10000] [--trials 9] [--payload 1448]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import struct
import sys
import time

from mptcrypt.constants import SymCipher
from mptcrypt.crypto import keyschedule as ks
from mptcrypt.crypto import segment
from mptcrypt.crypto.vectors import SEGMENT_OPTIONS
from mptcrypt.wire.ip import build_ip_header

TARGET_US = 2.0


TIMESTAMPS = bytes((1, 1, 8, 10)) + struct.pack("!II", 0x5EED_0001, 0x5EED_0002)  # NOP NOP TS(tsval, tsecr)


def kernel_segment(payload_len: int, options: bytes = SEGMENT_OPTIONS) -> bytes:
    hlen = 20 + len(options)
    tcp = struct.pack("!HHIIHHHH", 40000, 5000, 1, 2, ((hlen >> 2) << 12) | 0x018, 502, 0, 0) + options
    tcp += os.urandom(payload_len)
    return segment.py_assemble(build_ip_header(bytes((10, 0, 2, 2)), bytes((10, 0, 2, 1)), len(tcp)) + tcp, 20,
                               options, tcp[hlen:])


def per_call_us(fn, packet: bytes, n: int, trials: int) -> tuple[float, float]:
    """(median, best) µs per call over `trials` trials of `n` calls: the machine is shared, so the best trial is
    the closest to the code's own cost and the median what a loaded machine gives."""
    ext_seq, ext_ack = 0x1_0000_0001, 0x2_0000_0002
    results = []
    for _ in range(trials):
        t0 = time.perf_counter()
        for _ in range(n):
            fn(packet, 20, ext_seq, ext_ack)
        results.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(results), min(results)


def implementations() -> dict[str, type]:
    impls = {"python": segment.PySegmentCipher}
    try:
        from mptcrypt.crypto import _segment
        impls["compiled"] = _segment.SegmentCipher
    except ImportError as exc:
        print(f"compiled path not built ({exc}): only the Python reference is measured", file=sys.stderr)
    return impls


def run(n: int, trials: int, payload_len: int) -> dict:
    rows = measure(kernel_segment(payload_len), n, trials)
    return {
        "bench": "segment", "payload_bytes": payload_len, "options_bytes": len(SEGMENT_OPTIONS), "trials": trials,
        "target_us": TARGET_US, "selected_path": segment.SEGMENT_PATH, "selected_reason": segment.SEGMENT_PATH_REASON,
        "python": platform.python_version(), "machine": platform.machine(), "rows": rows,
        "rows_timestamps": measure(kernel_segment(payload_len, TIMESTAMPS + SEGMENT_OPTIONS), n, trials),
    }


def measure(kernel: bytes, n: int, trials: int) -> list[dict]:
    secrets = ks.direction_secrets(os.urandom(32), True)
    rows = []
    for suite in SymCipher:
        for path, impl in implementations().items():
            c = impl(suite, secrets)
            wire = c.seal(kernel, 20, 0x1_0000_0001, 0x2_0000_0002)
            assert c.open(wire, 20, 0x1_0000_0001, 0x2_0000_0002) is not None
            k = n if path == "compiled" else max(1, n // 10)  # the reference is ~10x slower: fewer calls
            protect, protect_best = per_call_us(c.seal, kernel, k, trials)
            verify, verify_best = per_call_us(c.open, wire, k, trials)
            rows.append({"suite": suite.name, "path": path, "protect_us": protect, "verify_us": verify,
                         "protect_best_us": protect_best, "verify_best_us": verify_best, "calls": k})
    return rows


def table(result: dict) -> str:
    lines = [f"per-segment cost, {result['payload_bytes']} B payload + {result['options_bytes']} B options "
             f"(target <= {result['target_us']:g} µs each; median and best of {result['trials']} trials)"]
    lines += rows_table(result["rows"])
    if result.get("rows_timestamps"):
        lines += ["", "the same with timestamps (NOP NOP TS + DSS, 40 B: sealed in the compact form)"]
        lines += rows_table(result["rows_timestamps"])
    return "\n".join(lines)


def rows_table(rows: list[dict]) -> list[str]:
    lines = ["| suite | path | protect µs | verify µs | best protect / verify µs | vs python |",
             "|---|---|---|---|---|---|"]
    by = {(r["suite"], r["path"]): r for r in rows}
    for r in rows:
        ref = by[(r["suite"], "python")]
        speedup = f"{(ref['protect_us'] + ref['verify_us']) / (r['protect_us'] + r['verify_us']):.1f}x"
        lines.append(f"| {r['suite']} | {r['path']} | {r['protect_us']:.2f} | {r['verify_us']:.2f} | "
                     f"{r['protect_best_us']:.2f} / {r['verify_best_us']:.2f} | {speedup} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    p.add_argument("--n", type=int, default=10000, help="calls per trial on the compiled path (a tenth on Python)")
    p.add_argument("--trials", type=int, default=9)
    p.add_argument("--payload", type=int, default=1448, help="payload bytes per segment")
    args = p.parse_args(argv)
    result = run(args.n, args.trials, args.payload)
    print(table(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    else:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
