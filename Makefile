# Two commands on a fresh machine:  `make demo` (set up; pretrain on digits with and without pruning; probe
# both beside the random-init floor)  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: setup demo lint test test-fast test-kernels gpu-wheels gpu-data gpu-check gpu-science clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev]"
	touch $@

demo: setup
	rm -rf runs/demo-full runs/demo-pruned
	$(BIN)/python examples/pruning_demo.py

test: lint
	$(BIN)/python -m pytest -q

test-fast: lint
	$(BIN)/python -m pytest -q -m "not slow"

# The kernel-sensitive tests (marked `kernels`: they compare floats across code paths, runs or machines) under
# emulated CPU kernels, each at 1 and 2 threads (tests/emulate_kernels.sh says what each name sets).
# `make test-kernels` runs them all; KERNELS=avx2 (what CI adds) picks one.
KERNELS ?= avx2 default onednn-avx2 onednn-sse41 mkl-avx2
test-kernels: setup
	bash tests/emulate_kernels.sh $(BIN)/python $(KERNELS)

# ruff (pinned in the dev extra): lint, and a format check that changes nothing.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The GPU check (benchmarks/gpu_check.sh: GPU-only tests, the throughput benchmark beside lightly, the sync-debug
# pass; at most ~8 min on one H100/H200). The GPU image has Python 3.12 and no network: `make gpu-wheels` here
# downloads the packages it lacks, at this venv's versions, into $(GPU_WHEELS)/; carry that folder there and run
# `GPU_WHEELS=wheels bash benchmarks/gpu_check.sh` (or `make gpu-check`), which installs only what is missing.
GPU_WHEELS   ?= wheels
GPU_PYTHON   ?= 3.12
GPU_PACKAGES  = kornia kornia-rs lightly pydantic pydantic-core annotated-types typing-inspection typing-extensions

gpu-wheels:
	@test -x $(BIN)/pip || { echo 'no $(VENV): run make setup first'; exit 1; }
	mkdir -p $(GPU_WHEELS)
	$(BIN)/pip download --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) --implementation cp \
	    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
	    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d $(GPU_WHEELS) \
	    $$($(BIN)/python -c "import importlib.metadata as m; \
	        print(' '.join(n + '==' + m.version(n) for n in '$(GPU_PACKAGES)'.split()))")

gpu-check:
	bash benchmarks/gpu_check.sh --wheels $(GPU_WHEELS)

# The GPU science experiment (benchmarks/gpu_science.sh: random, the oracle, all the data at equal compute, EMP and
# coverage at rate 0.7, ResNet-18 at 32 px; about 10 min on one H100/H200), after gpu-check. Without CIFAR-100 it
# runs on Fashion-MNIST: `make gpu-data` copies its four gzipped IDX files (30 MB) into $(GPU_DATA)/ to carry.
GPU_DATA ?= gpu-data
FASHION_MNIST ?= /usr/share/datasets/fashion-mnist

gpu-data:
	@test -d $(FASHION_MNIST) || { echo 'no $(FASHION_MNIST): apt-get install dataset-fashion-mnist'; exit 1; }
	mkdir -p $(GPU_DATA)/FashionMNIST/raw
	cp $(FASHION_MNIST)/*-ubyte.gz $(GPU_DATA)/FashionMNIST/raw/

gpu-science:
	bash benchmarks/gpu_science.sh --wheels $(GPU_WHEELS) --data-root $(GPU_DATA)

clean:
	rm -rf runs $(VENV)
