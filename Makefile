# The two quick-start commands. Both set up .venv first (idempotent).
.PHONY: setup demo test test-all bench

setup:
	bash scripts/setup.sh

# The main job on the embedded default: a small CPU ablation (none / h / w / wh) on legal_charges, then the leaderboard.
demo: setup
	bash scripts/demo.sh

test: setup
	.venv/bin/python -m pytest -q

test-all: setup
	.venv/bin/python -m pytest -q -m "not gpu"

bench: setup
	.venv/bin/python -m pytest benchmarks --benchmark-enable -q
