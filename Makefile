# Every target installs what is missing first, so `make run` / `make test` work on a fresh machine.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
# CPU build from the local wheel cache; bring your own CUDA/MPS torch with `make install TORCH_SPEC=torch`.
TORCH_SPEC ?= torch==2.13.0
STAMP   := $(VENV)/.installed

.PHONY: install run test test-fast test-cluster smoke lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test,lint,sweep,launchers,loggers,peft,wandb]"
	touch $(STAMP)

run: install
	$(BIN)/nlpexp

# TEST_JOBS pytest workers (pytest-xdist), each test file on one of them (its module fixtures built once), the
# longest files first (tests/conftest.py LONGEST_FIRST; xdist's own order is by number of tests)
TEST_JOBS ?= 2
# compileall: where PYTHONDONTWRITEBYTECODE is set, each of the suite's processes would compile nlpexp again
test: install
	$(BIN)/python -m compileall -q nlpexp hydra_plugins
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder --durations=15 -m "not cluster"

# the cluster recipe (docs/sweeps-and-clusters.md) on a real PostgreSQL and a single-node SLURM started on
# localhost (tests/cluster: root; apt-installs postgresql slurm-wlm munge when missing; stops what it started).
# Skipped, with the reason, where they cannot run
test-cluster: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m cluster -rs --durations=10 tests/cluster

# the edit loop: unit tests only (no smoke runs, sweeps, subprocesses) on TEST_JOBS workers: ~2 min on 2 AMD EPYC cores
test-fast: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n $(TEST_JOBS) -m "not slow"

# every registered task x its models in smoke form, through the joblib launcher, then nlpexp-report over it
smoke: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m nlpexp.smoke --n-jobs 2

lint: install
	$(BIN)/ruff check nlpexp tests bench

bench: install
	$(BIN)/python bench/finsent_throughput.py
	$(BIN)/python bench/embedding.py
	$(BIN)/python bench/novel_generation.py
	$(BIN)/python bench/generation.py
	$(BIN)/python bench/predict.py
	$(BIN)/python bench/peak.py
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/lora.py
	$(BIN)/python bench/precision.py
	$(BIN)/python bench/kill_resume.py
	$(BIN)/python bench/prepare.py
	$(BIN)/python bench/bootstrap.py

clean:
	rm -rf $(VENV) outputs multirun
