"""bench/bench_segment.py still runs and writes its JSON (a tiny run; the real numbers come from running it by hand)."""

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_segment.py"


def test_bench_smoke(tmp_path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("mptcrypt_bench_segment", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    assert bench.main(["--n", "20", "--trials", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    paths = {r["path"] for r in result["rows"]}
    assert "python" in paths and ("compiled" in paths) == (importlib.util.find_spec("mptcrypt.crypto._segment") is not None)
    assert all(r["protect_us"] > 0 and r["verify_us"] > 0 for r in result["rows"])
    assert "protect µs" in capsys.readouterr().out
