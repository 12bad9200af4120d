# mptcrypt: the README's two commands are `make demo` and `make test` (both run as root on a fresh machine).
.PHONY: setup test unit demo bench clean

setup:
	bash scripts/setup.sh

test: setup
	.venv/bin/python -m pytest -q

unit: setup
	.venv/bin/python -m pytest -q tests/unit

demo: setup
	.venv/bin/python -m mptcrypt.demo

# every issue 14 target beside plain, JSON + table (~4 min; `make bench BENCH=--quick` ~1 min). Builds topologies:
# run it as `flock /tmp/mptc-itest.lock make bench` when other lab runs may be going
bench: setup
	.venv/bin/python bench/bench_throughput.py --json bench/throughput.json $(BENCH)

clean:
	-.venv/bin/python -m mptcrypt topo clean
