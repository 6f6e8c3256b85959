# keras-zoo: the two commands of the README are `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed

.PHONY: venv test test-slow lint constraints clean bench-export bench-serve bench-finetune bench-requests serve

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
	$(PY) -m pytest -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

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

bench-finetune: $(STAMP)
	$(PY) -m bench.finetune

# Server CPU per request with a native load generator (h2load, Debian's nghttp2-client).
bench-requests: $(STAMP)
	command -v h2load >/dev/null || { apt-get update -qq && apt-get install -y -qq nghttp2-client; }
	$(PY) -m bench.requests
