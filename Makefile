# The one entry point for building, serving and testing. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROTOS := $(wildcard proto/mms/v1/*.proto)
GEN := engine/_gen
RUST_SOURCES := $(shell find rust_core -name '*.rs' -o -name Cargo.toml) Cargo.toml $(PROTOS) pyproject.toml
EXT_STAMP := $(VENV)/.ext-release

.DEFAULT_GOAL := help

.PHONY: help
help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.deps: requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

.PHONY: venv
venv: $(VENV)/.deps  ## create .venv with every Python dependency

$(GEN)/.stamp: $(PROTOS) $(VENV)/.deps
	rm -rf $(GEN) && mkdir -p $(GEN)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=$(GEN) --pyi_out=$(GEN) \
		--grpc_python_out=$(GEN) $(PROTOS)
	touch $@

.PHONY: proto
proto: $(GEN)/.stamp  ## regenerate the Python protobuf stubs from proto/

# Release build of the extension into .venv (stale .so files removed first); pyproject.toml
# too: its scripts (mms, mms-bridge) and packages are installed by this step.
$(EXT_STAMP): $(RUST_SOURCES) $(VENV)/.deps
	rm -f engine/_core*.so
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH \
		$(VENV)/bin/maturin develop --release
	$(PY) -c 'import engine._core'
	touch $@

.PHONY: build
build: $(GEN)/.stamp $(EXT_STAMP)  ## build the Rust extension (release) and the stubs

.PHONY: serve
serve: build  ## run the server on ./data (gRPC 127.0.0.1:50051, metrics :9464)
	$(VENV)/bin/mms serve --data ./data

.PHONY: tools
tools:  ## system tools the tests use: promtool (Debian's prometheus package)
	@command -v promtool >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing promtool (Debian package prometheus)"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else echo "promtool is missing: install Debian's prometheus package" >&2; exit 1; fi; }

.PHONY: test
test: build tools  ## cargo test + pytest (sets everything up first)
	cargo test --release -q --workspace --exclude mms_binding
	$(PY) -m pytest -q -p no:cacheprovider

.PHONY: lint
lint: $(GEN)/.stamp  ## rustfmt, clippy, ruff
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	$(PY) -m pip install -q ruff
	$(VENV)/bin/ruff check engine drivers tests bench
	$(VENV)/bin/ruff format --check engine drivers tests bench

# What the benchmark suite needs besides the build: PostgreSQL 15 (Debian's package, for
# the peer; installed when missing if we are root, as `tools` does for promtool) and
# bench/requirements.txt (psycopg, matplotlib, py-spy), which `make test` never installs.
$(VENV)/.bench-deps: bench/requirements.txt $(VENV)/.deps
	$(PY) -m pip install -q -r bench/requirements.txt
	touch $@

.PHONY: bench-setup
bench-setup: $(VENV)/.bench-deps  ## what `make bench` needs: PostgreSQL 15, psycopg, matplotlib
	@test -x /usr/lib/postgresql/15/bin/postgres && command -v pgbench >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing PostgreSQL 15 (Debian package postgresql-15)"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends postgresql-15 postgresql-client-15 >/dev/null; \
	  else echo "PostgreSQL 15 is missing: install Debian's postgresql-15 package" >&2; exit 1; fi; }

# BENCH_ARGS passes options to bench/suite.py, e.g. BENCH_ARGS="--members 20000 --quick".
BENCH_ARGS ?=
.PHONY: bench
bench: build bench-setup  ## the benchmark suite (1M members, peers, ratios; ~6 min): bench/README.md
	$(PY) bench/suite.py $(BENCH_ARGS)

MICRO := $(PY) -m pytest bench -q -p no:cacheprovider --benchmark-only \
	--benchmark-storage=file://bench/baseline
.PHONY: bench-micro
bench-micro: build  ## micro-benchmarks (pytest-benchmark), compared with bench/baseline/
	$(MICRO) --benchmark-compare --benchmark-columns=min,median,mean,ops,rounds

.PHONY: bench-micro-save
bench-micro-save: build  ## run the micro-benchmarks and save them as the new baseline
	$(MICRO) --benchmark-save=baseline

.PHONY: clean
clean:  ## remove build outputs (keeps ./data)
	rm -rf $(GEN) $(VENV) target engine/_core*.so
