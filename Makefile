.PHONY: demo test lint routes eval mutation bench bench-instructions bench-approvals bench-models bench-training

demo:
	python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/triage demo

test:
	python3 -m venv .venv && .venv/bin/pip install -q -e ".[dev]" && .venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/python scripts/typecheck.py && .venv/bin/triage eval && .venv/bin/pytest

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/python scripts/typecheck.py

routes:
	.venv/bin/python -m triage.evals.route_check

eval:
	.venv/bin/triage eval

mutation:
	.venv/bin/python scripts/mutation.py --min-score 90

bench:
	python3 -m venv .venv && .venv/bin/pip install -q -e ".[postgres]" && .venv/bin/python scripts/bench.py $(BENCH_ARGS)

bench-instructions:
	.venv/bin/python scripts/bench_instructions.py $(BENCH_ARGS)

bench-approvals:
	.venv/bin/python scripts/bench_approvals.py --start-postgres

bench-models:
	.venv/bin/python -m triage.evals.bench_models

bench-training:
	.venv/bin/python scripts/bench_training.py
