# nslab: `make demo` shows the lab, `make test` runs every test. Both create the virtual environment first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages the tests and experiments use as peers (command -> package).
# `lab bench tools` measures with these too (its test runs in CI, so `make test` installs them as well).
BENCH_PEER_COMMANDS := wrk:wrk nginx:nginx
PEER_COMMANDS := tcpdump:tcpdump iperf3:iperf3 curl:curl ip:iproute2 dot:graphviz ping:iputils-ping gcc:gcc ab:apache2-utils chromium:chromium nc:netcat-openbsd $(BENCH_PEER_COMMANDS)
# PyPy for pystack nodes with `python: pypy` (lab/build/interpreters.py): Debian's pypy3 (Python 3.9), with
# python-pytun in its own environment. The tests bring up such a node, so `make test` builds it too.
PYPY_VENV := .venv-pypy
PYPY_PACKAGES := pypy3 pypy3-dev pypy3-venv
# The C connection-rate yardstick of `lab bench` (a client and a kernel listener that are not the bottleneck).
CONNLOAD := build/connload

.PHONY: venv peers bench-peers pypy test test-unit lint demo bench clean

venv: $(VENV)/.installed peers $(CONNLOAD)

$(CONNLOAD): benchmarks/connload.c | peers
	@mkdir -p build
	gcc -O2 -Wall -Wextra -pthread -o $@ $<

# A pip configuration may name local package folders that are not there; pip then says so once per
# package ("WARNING: Location '...' is ignored"), which tells nothing about nslab. `$(call pip,ARGS)`
# shows the command and everything else pip says (errors, other warnings), and keeps pip's exit code.
PIP_NOISE := ^WARNING: Location '.*' is ignored: it is neither a file nor a directory\.$$
pip = @echo "$(BIN)/pip $(1)"; $(BIN)/pip $(1) 2>&1 | { grep -v "$(PIP_NOISE)" || true; }; exit $${PIPESTATUS[0]}

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(call pip,install --quiet --upgrade pip)
	$(call pip,install --quiet -e '.[test]')
	touch $@

pypy: $(PYPY_VENV)/.installed

$(PYPY_VENV)/.installed: pyproject.toml
	@missing=""; for pkg in $(PYPY_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	    echo "missing Debian packages:$$missing (install them, or run as root on Debian)"; exit 1; \
	  fi; \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	pypy3 -m venv $(PYPY_VENV)
	@echo "$(PYPY_VENV)/bin/pip install --quiet python-pytun"; \
	  $(PYPY_VENV)/bin/pip install --quiet 'python-pytun>=2.4' 2>&1 | { grep -v "$(PIP_NOISE)\|DEPRECATION" || true; }; \
	  exit $${PIPESTATUS[0]}
	touch $@

# Install the peer programs only when missing (apt-get update once, first).
peers:
	$(call install_missing,$(PEER_COMMANDS))

bench-peers:
	$(call install_missing,$(BENCH_PEER_COMMANDS))

define install_missing
	@missing=""; for pair in $(1); do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "missing peer programs:$$missing (install them, or run as root on Debian)"; \
	  fi; \
	fi
endef

test: venv pypy
	$(BIN)/ruff check lab stack tests benchmarks
	$(BIN)/python -m pytest -q

test-unit: venv
	$(BIN)/python -m pytest -q -m "not root"

lint: venv
	$(BIN)/ruff check lab stack tests benchmarks

demo: venv
	$(BIN)/python -m lab.cli.demo

# Each benchmark prints nslab's figure next to the kernel's (or a C baseline), measured in the same run.
bench: venv bench-peers pypy
	$(BIN)/lab bench
	$(BIN)/lab bench --python pypy
	$(BIN)/lab bench tools
	$(BIN)/lab bench tools --python pypy
	$(BIN)/python benchmarks/bench_up.py
	$(BIN)/python benchmarks/bench_memory.py --bytes 200000000
	$(BIN)/python benchmarks/bench_wire.py
	$(BIN)/python benchmarks/bench_exchanges.py

clean:
	rm -rf $(VENV) $(PYPY_VENV) .pytest_cache .ruff_cache
