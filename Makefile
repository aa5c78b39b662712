# dinomaly: build, test and demo on a fresh machine with only Rust and
# python3/pip. libtorch 2.11.0 (what tch 0.24.0 expects) comes from the
# registry's torch==2.11.0 wheel, unpacked into the ignored folder .libtorch.
#   make demo   the main job: extract -> train -> score -> metrics on real images
#   make demo-smoke  the same on a handful of images (under a minute)
#   make test   the test suite, after make lint (cargo fmt --check, clippy -D warnings);
#               installs Debian's chromium with apt-get first: the report test
#               renders dinomaly-metrics --html in it
#   make bench  speed against anomalib 2.7 / timm / the official evaluation on
#               this machine, outputs compared (bench/results.md; BENCH_METRICS=0
#               skips the ~8-minute metrics part)
#   make fixtures    regenerate the golden fixtures (tests/fixtures/gen/, pinned packages)
#   make gpu-bundle  binaries + images for scripts/gpu-check.sh on a GPU machine
#   CUDA=1 make ...  also install the CUDA libraries (2.7 GB) for GPU runs

PYTHON    ?= python3
CARGO     ?= cargo
LIBTORCH_DIR := $(CURDIR)/.libtorch
export LIBTORCH := $(LIBTORCH_DIR)/torch
CUDA      ?= 0

TORCH_PIN := torch==2.11.0
# The two CUDA runtime libraries libtorch_cpu.so links against; enough for CPU.
CUDA_MIN  := nvidia-cuda-runtime==13.0.96.* nvidia-cuda-cupti==13.0.85.*
# Libraries a CPU-only binary never loads (removed unless CUDA=1).
CUDA_ONLY_LIBS := libtorch_cuda.so libtorch_cuda_linalg.so libtorch_python.so \
                  libtorch_nvshmem.so libc10_cuda.so libcaffe2_nvrtc.so

.PHONY: all build test lint demo demo-smoke libtorch clean-libtorch man bench fixtures gpu-bundle chromium

all: build

libtorch: $(LIBTORCH_DIR)/.installed

$(LIBTORCH_DIR)/.installed:
	@echo "installing libtorch 2.11.0 from the $(TORCH_PIN) wheel into $(LIBTORCH_DIR)"
	rm -rf $(LIBTORCH_DIR)
ifeq ($(CUDA),1)
	$(PYTHON) -m pip install -q --disable-pip-version-check --target $(LIBTORCH_DIR) '$(TORCH_PIN)'
else
	$(PYTHON) -m pip install -q --disable-pip-version-check --no-deps --target $(LIBTORCH_DIR) '$(TORCH_PIN)' $(foreach p,$(CUDA_MIN),'$(p)')
	cd $(LIBTORCH_DIR)/torch/lib && rm -f $(CUDA_ONLY_LIBS)
endif
	touch $@

build: libtorch
	$(CARGO) build --release --locked

# Debian's headless Chromium for tests/report.rs, installed as libtorch is:
# by the Makefile, once. apt-get needs root (or sudo); when it cannot
# install, make stops here and says why, so the test never silently skips.
CHROMIUM ?= $(shell command -v chromium || command -v chromium-browser)
export CHROMIUM
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

chromium:
ifeq ($(CHROMIUM),)
	@echo "installing Debian's chromium (apt-get) for the report test"
	$(SUDO) apt-get update -q
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends chromium || \
	  { echo "make: cannot install chromium with apt-get: the report test (tests/report.rs) needs a headless Chromium; install Debian's chromium package or set CHROMIUM=/path/to/chromium" >&2; exit 1; }
else
	@echo "headless browser for the report test: $(CHROMIUM)"
endif

test: libtorch lint chromium
	$(CARGO) build --release --locked --bins --example demo-data
	$(CARGO) test --release --locked

# Formatting (rustfmt.toml) and clippy with every warning an error, on all
# targets; the components come with rustup's default profile, and are added
# when missing.
lint: libtorch
	@$(CARGO) fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@$(CARGO) clippy --version >/dev/null 2>&1 || rustup component add clippy
	$(CARGO) fmt --check
	$(CARGO) clippy --release --locked --all-targets -- -D warnings

demo: build
	$(CARGO) build --release --locked --example demo-data
	bash examples/demo.sh

# The same pipeline on a handful of images and 10 iterations (what the test
# suite runs).
demo-smoke: build
	$(CARGO) build --release --locked --example demo-data
	DEMO_QUICK=1 bash examples/demo.sh

man: build
	bash scripts/gen-man.sh

# The reference packages (tests/fixtures/gen/requirements.txt) for make bench.
BENCH_PYTHON ?= $(CURDIR)/.venv-ref/bin/python

$(CURDIR)/.venv-ref/bin/python:
	$(PYTHON) -m venv $(CURDIR)/.venv-ref
	$(CURDIR)/.venv-ref/bin/pip install -q --disable-pip-version-check -r tests/fixtures/gen/requirements.txt

# Every golden fixture regenerated from its generator in tests/fixtures/gen/
# with the pinned reference packages (CPU, no network, about a minute);
# `git status` then shows what changed. Run on another machine than the one
# that made them, the reference's own float32 kernels round differently:
# measured 2026-12-05 on this project's AVX-512 CPU, every fixture changed
# by at most 4.2e-6 relative (encoder cases; model 7.3e-7, score 3.2e-7),
# inside the tests' 1e-5. Commit a regeneration only with a reason.
FIXTURE_GENERATORS := calibration encoder maps metrics model preprocess score weights

fixtures: $(BENCH_PYTHON)
	@for g in $(FIXTURE_GENERATORS); do \
	  echo "tests/fixtures/gen/$$g.py"; \
	  HF_HUB_OFFLINE=1 $(BENCH_PYTHON) tests/fixtures/gen/$$g.py || exit 1; \
	done
	git status --short tests/fixtures

bench: build $(BENCH_PYTHON)
	$(CARGO) build --release --locked --example bench_encoder
	PYTHON=$(BENCH_PYTHON) bash bench/run.sh

# What scripts/gpu-check.sh needs on a GPU machine without Rust or a
# registry: the binaries and a few real images, in the ignored folder .gpu.
gpu-bundle: build
	$(CARGO) build --release --locked --example demo-data
	PYTHON=$(PYTHON) bash scripts/gpu-bundle.sh .gpu

clean-libtorch:
	rm -rf $(LIBTORCH_DIR)
