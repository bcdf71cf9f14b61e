# Every target sets up .venv on first use, so `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run run-at test lint check-wheel bench gpu-check setup clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[all]"
	@touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/gkl demo

# Adversarial training on the bundled digits: standard vs TRADES vs GKL-AT, then PGD/CW/AutoAttack.
run-at: $(STAMP)
	$(VENV)/bin/gkl train configs/demo_at/standard.yaml --resume
	$(VENV)/bin/gkl adv-train configs/demo_at/trades.yaml --resume
	$(VENV)/bin/gkl adv-train configs/demo_at/gkl.yaml --resume
	for r in standard trades gkl; do \
	  $(VENV)/bin/gkl evaluate runs/demo_at/$$r --which last --robust --eps 0.1 \
	    --attacks pgd20,cw20,autoattack --autoattack-version fast || exit 1; done

# Two pytest-xdist workers, one torch thread each (tests/conftest.py; OMP_NUM_THREADS, when set, rules);
# tests sharing an expensive fixture carry the same xdist_group mark and run on one worker.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup tests

# ruff (lint and format) over src, tests and benchmarks, mypy over src/gkl; every tool runs, then the target fails if any failed.
lint: $(STAMP)
	@status=0; \
	$(PY) -m ruff check src tests benchmarks || status=1; \
	$(PY) -m ruff format --check src tests benchmarks || status=1; \
	$(PY) -m mypy || status=1; \
	exit $$status

# Build the wheel, install it into a fresh venv and run gkl from an empty directory (.ci/check_wheel.sh).
check-wheel: $(STAMP)
	PY=$(abspath $(PY)) .ci/check_wheel.sh

# The same ratios on a GPU: make bench BENCH_DEVICE=cuda (times read after torch.cuda.synchronize()).
BENCH_DEVICE ?= cpu
bench: $(STAMP)
	$(PY) benchmarks/losses.py --device $(BENCH_DEVICE)
	$(PY) benchmarks/train_step.py --device $(BENCH_DEVICE)
	$(PY) benchmarks/data_pipeline.py --device $(BENCH_DEVICE)
	$(PY) benchmarks/adversarial_step.py --device $(BENCH_DEVICE)
	$(PY) benchmarks/ssl_step.py --device $(BENCH_DEVICE)
	$(PY) benchmarks/clip_loss.py --device $(BENCH_DEVICE)
	$(PY) benchmarks/segmentation_step.py --quick --device $(BENCH_DEVICE)

# On a CUDA machine: a few steps of every task with bf16/fp16 AMP, channels-last, torch.compile, DDP over
# NCCL (torchrun), SyncBN, PGD/AutoAttack and exact resume; one pass/fail table (docs/development.md).
# Without CUDA it says so in one line and exits 0 (DEVICE=cpu runs the checks that need no GPU).
DEVICE ?= cuda
gpu-check: $(STAMP)
	$(VENV)/bin/gkl doctor --gpu --device $(DEVICE)

clean:
	rm -rf $(VENV) runs
