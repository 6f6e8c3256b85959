# keras-zoo: the two commands of the README are `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed

.PHONY: venv test test-slow lint constraints clean bench-export bench-serve bench-finetune \
	bench-requests bench-watchers bench-memory bench-sessions bench-overload serve base-image wheelhouse wheelhouse-gpu images images-services images-gpu \
	test-images mutation

# The virtual environment is rebuilt when the dependency list or the pins change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[server,dev]"
	touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(PY) -m pytest -m "not slow and not images"

test-slow: $(STAMP)
	$(PY) -m pytest -m "slow and not images"

# Mutation testing of the core (Cosmic Ray, mutation/targets.toml), not in CI: about 45-60 min
# for every module on 2 cores, three targets side by side (docs/testing.md).
# MODULES="records retry" runs some.
MODULES ?=
mutation: $(STAMP)
	$(PY) mutation/run.py $(MODULES)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

# Re-pin after a dependency change: a fresh venv resolved without pins, then frozen.
constraints:
	rm -rf /tmp/zoo-pin && $(PYTHON) -m venv /tmp/zoo-pin
	/tmp/zoo-pin/bin/pip install -q --upgrade pip && /tmp/zoo-pin/bin/pip install -q ".[server,dev]"
	{ echo "# Pinned versions for reproducible deployments (CPU server + dev tools), Python 3.11, Linux x86-64."; \
	  echo "# Regenerate after changing pyproject.toml: \`make constraints\`."; \
	  /tmp/zoo-pin/bin/pip freeze | grep -v '^keras-zoo'; } > constraints.txt

# Benchmarks: side-by-side ratios, written to docs/benchmarks/. Minutes, not part of `make test`.
bench-export: $(STAMP)
	$(PY) -m bench.export

# Serve the repository on 127.0.0.1:8001 (metrics on :8002); an empty repository first gets
# MobileNetV2 (ImageNet weights if cached, else random weights and a warning).
serve: $(STAMP)
	$(BIN)/zoo serve --repository $(REPOSITORY) --bootstrap MobileNetV2

REPOSITORY ?= model_repository

bench-serve: $(STAMP)
	$(PY) -m bench.serve

# Open-loop load at 1x/2x/4x the saturated throughput, with client deadlines (serve.md, "Overload").
bench-overload: $(STAMP)
	$(PY) -m bench.overload

bench-finetune: $(STAMP)
	$(PY) -m bench.finetune

# Memory per served model (the seed models) against one ONNX Runtime session each.
bench-memory: $(STAMP)
	$(PY) -m bench.memory

# A version's sessions, design by design: memory and speed side by side (serve.md, "Sessions").
bench-sessions: $(STAMP)
	$(PY) -m bench.sessions --out docs/benchmarks/serve.md

# 50 WatchJob streams on a deliberately slow job store, beside batch-1 inference.
bench-watchers: $(STAMP)
	$(PY) -m bench.watchers

# Server CPU per request with a native load generator (h2load, Debian's nghttp2-client).
bench-requests: $(STAMP)
	command -v h2load >/dev/null || { apt-get update -qq && apt-get install -y -qq nghttp2-client; }
	$(PY) -m bench.requests

# ---- container images (docs/operations.md, "Building the images") ---------------------------
# The route for hosts without Docker Hub or without a package index (CI here): base images made
# from Debian's packages, wheels fetched on the host, builds that install with --no-index.
# On a host that can pull python:3.11-slim, `docker build --target serve .` is all it takes.
DOCKER ?= docker
export ZOO_CACHE ?= /var/cache/keras-zoo
BASE_IMAGE ?= keras-zoo-base:bookworm
REVISION := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
DOCKER_BUILD = DOCKER_BUILDKIT=0 $(DOCKER) build --network host --build-arg REVISION=$(REVISION)
ZOO_BUILD = $(DOCKER_BUILD) --build-arg PYTHON_IMAGE=$(BASE_IMAGE)

base-image:
	DOCKER=$(DOCKER) deploy/images/base-image.sh $(BASE_IMAGE) python3,python3-venv,ca-certificates,usr-is-merged \
	  perl,libperl5.36,perl-modules-5.36

wheelhouse:
	deploy/images/wheelhouse.sh cpu

wheelhouse-gpu:
	deploy/images/wheelhouse.sh gpu

# serve, train, and cpu (train serving, the earlier name). The GPU wheels (GBs) are linked
# into the build context only while the GPU images build: every build sends the whole context.
images: base-image wheelhouse
	find wheelhouse/gpu -name '*.whl' -delete
	$(ZOO_BUILD) --target serve -t keras-zoo:serve .
	$(ZOO_BUILD) --target train -t keras-zoo:train .
	$(ZOO_BUILD) --target cpu -t keras-zoo:cpu .

# PostgreSQL and Prometheus from Debian's packages, for the compose stack without Docker Hub:
# POSTGRES_IMAGE=keras-zoo-postgres:15 PROMETHEUS_IMAGE=keras-zoo-prometheus:bookworm
images-services:
	DOCKER=$(DOCKER) deploy/images/base-image.sh keras-zoo-base-postgres:bookworm postgresql-15,usr-is-merged
	DOCKER=$(DOCKER) deploy/images/base-image.sh keras-zoo-base-prometheus:bookworm prometheus,wget,ca-certificates,usr-is-merged
	$(DOCKER_BUILD) -t keras-zoo-postgres:15 deploy/images/postgres
	$(DOCKER_BUILD) -t keras-zoo-prometheus:bookworm deploy/images/prometheus

# Several GB of CUDA wheels: serve-gpu, train-gpu, and gpu (train-gpu serving)
images-gpu: base-image wheelhouse-gpu
	$(ZOO_BUILD) --target serve-gpu -t keras-zoo:serve-gpu .
	$(ZOO_BUILD) --target train-gpu -t keras-zoo:train-gpu .
	$(ZOO_BUILD) --target gpu -t keras-zoo:gpu .
	find wheelhouse/gpu -name '*.whl' -delete

# Builds every image in a private Docker engine and checks them through real containers
# (tests/images, host networking only). ZOO_GPU_IMAGES=1 adds the GPU images.
test-images: $(STAMP)
	tests/images/run.sh
