"""bench/bench_auth.py still runs and writes its JSON (a tiny run; the real numbers come from running it by hand)."""

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_auth.py"


def test_bench_smoke(tmp_path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("mptcrypt_bench_auth", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    assert bench.main(["--algs", "ed25519", "--trials", "1", "--conns", "16", "--verify", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["batch"] for r in result["rows"]] == ["single", 1, 16, 64, 256]
    assert all(r["server_conns_per_s"] > 0 and r["client_verifies_per_s"] > 0 for r in result["rows"])
    assert "server conn/s" in capsys.readouterr().out
