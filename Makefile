# attnserve: two set-up commands, `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
MODELS ?= models
PYTEST_ARGS ?=

.PHONY: install tools perf-analyzer run models test test-slow lint lint-deploy constraints smoke-image smoke-gpu-image proto proto-check bench bench-quick bench-single gpu-check gpu-wheels clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[export,dev]'
	touch $(STAMP)

install: $(STAMP)

# The demo models are trained and exported once, then reused.
$(MODELS)/.built: | $(STAMP)
	$(BIN)/attnserve demo build --output $(MODELS)

models: $(MODELS)/.built

run: models
	$(BIN)/attnserve serve --models $(MODELS) --http-port 8000

proto: $(STAMP)
	$(PY) tools/protogen.py

proto-check: $(STAMP)
	$(PY) tools/protogen.py --check

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# promtool and prometheus for the metrics tests, from Debian's `prometheus` package; where it
# cannot be installed those tests skip and say why.
tools:
	@command -v promtool >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo -n); \
	  $$SUDO apt-get update -q && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; \
	} || echo "cannot install Debian's prometheus package: the promtool/Prometheus tests will skip"

# Triton's perf_analyzer, unmodified (tests/kserve/test_perf_analyzer.py, docs/kserve.md); where it
# cannot be installed those tests skip and say why.
PERF_ANALYZER := $(VENV)/perf-analyzer/bin/perf_analyzer
$(PERF_ANALYZER): tools/install_perf_analyzer.sh | $(STAMP)
	PIP="$(PY) -m pip" tools/install_perf_analyzer.sh $(VENV)/perf-analyzer

perf-analyzer:
	@$(MAKE) --no-print-directory $(PERF_ANALYZER) || echo "cannot install perf_analyzer: its tests will skip"

# deploy/: kustomize render + kubernetes-validate, hadolint, checkov, yamllint, promtool
# (its PyPI tools go to their own venv, $(VENV)/deploy-lint).
lint-deploy: tools
	LINT_VENV=$(VENV)/deploy-lint deploy/lint.sh

# The images' pip constraints (deploy/docker/constraints-*.txt) from this venv's `pip freeze`,
# and the GPU image's onnxruntime-gpu + CUDA/cuDNN wheels by hash (requirements-gpu.txt, from
# PyPI): rerun after changing dependencies in pyproject.toml.
constraints: $(STAMP)
	$(PY) deploy/tools/freeze_constraints.py
	$(PY) deploy/tools/lock_gpu_wheels.py

# Not part of `make test` (minutes, root, podman): builds the CPU images with podman and serves
# real requests from them (docs/deployment.md, "Image smoke test"): the demo models baked in, and
# a tiny checkpoint exported here with `attnserve export` and copied from its models image.
SMOKE_DIR ?= build/smoke
smoke-image: $(STAMP) models
	rm -rf $(SMOKE_DIR)/checkpoint $(SMOKE_DIR)/exported
	$(PY) -c 'import sys, pathlib; from tests.fixtures.tiny_text_models import build_bart; \
	  build_bart(pathlib.Path(sys.argv[1]))' $(SMOKE_DIR)/checkpoint
	$(BIN)/attnserve export --model $(SMOKE_DIR)/checkpoint --task summarization \
	  --output $(SMOKE_DIR)/exported/tiny-bart --name tiny-bart
	$$([ "$$(id -u)" = 0 ] || echo sudo) deploy/docker/smoke-podman.sh $(MODELS) $(SMOKE_DIR)/exported

# After smoke-image (its local base and demo models image): the GPU image built on the local
# Debian base with the real CUDA/cuDNN wheels; every CUDA library but the driver's must resolve
# in it, it must refuse cuda clearly here (no driver) and serve on the CPU.
smoke-gpu-image:
	$$([ "$$(id -u)" = 0 ] || echo sudo) deploy/docker/smoke-gpu-podman.sh

test: $(STAMP) tools perf-analyzer lint lint-deploy proto-check models
	ATTNSERVE_TEST_MODELS=$(abspath $(MODELS)) $(BIN)/pytest -q $(PYTEST_ARGS)

test-slow: $(STAMP) models
	ATTNSERVE_TEST_MODELS=$(abspath $(MODELS)) $(BIN)/pytest -q -m slow $(PYTEST_ARGS)

# Benchmarks (docs/benchmarks.md): every baseline side by side on random-weight models of real
# size, exported once into bench-out/ (~30 min); bench-quick runs a tiny model in about a minute.
bench: $(STAMP)
	$(BIN)/attnserve bench suite --plan full --out bench-out

bench-quick: $(STAMP)
	$(BIN)/attnserve bench suite --plan quick --out bench-out

OPTIMUM_VENV := $(VENV)/optimum
$(OPTIMUM_VENV)/.installed: bench/optimum-requirements.txt
	python3 -m venv $(OPTIMUM_VENV)
	$(OPTIMUM_VENV)/bin/pip install -q -r bench/optimum-requirements.txt
	touch $@

# W1 one request at a time: generate(), our fp32 and int8 exports, Optimum (needs `make bench`'s
# bart-base checkpoint and fp32 export; the int8 export is made here once).
bench-single: $(STAMP) $(OPTIMUM_VENV)/.installed
	test -f bench-out/served-int8/bart-base/model.json || $(BIN)/attnserve export \
	  --model bench-out/checkpoints/bart-base --task summarization --dtype int8 \
	  --output bench-out/served-int8/bart-base --name bart-base
	$(BIN)/attnserve bench single --checkpoint bench-out/checkpoints/bart-base \
	  --model-dir fp32=bench-out/served/bart-base/bart-base \
	  --model-dir int8=bench-out/served-int8/bart-base \
	  --optimum-python $(OPTIMUM_VENV)/bin/python --repeats 5 --out bench-out/single

# The GPU check (docs/benchmarks.md, "GPU check"): runs ON the lent GPU machine, which has no
# network and no venv: it uses the image's python3 and the wheels carried in .whl/.
GPU_CHECK_OUT ?= $(or $(OUT),gpu-check-out)
gpu-check:
	bench/gpu_check.sh $(GPU_CHECK_OUT)

# Here, before the GPU check: our pins that the GPU image lacks or has older (cp312, x86-64).
GPU_WHEELS := transformers==5.24.0 tokenizers==0.23.3 grpcio==1.85.3 protobuf==7.36.2 \
  grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1 starlette==1.10.0 uvicorn==0.54.0
gpu-wheels:
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)

clean:
	rm -rf $(VENV) $(MODELS) .pytest_cache .ruff_cache
