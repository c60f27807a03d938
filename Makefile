# `make` sets up a virtualenv in .venv and the system tools the tests use;
# `make test` runs the whole suite (lint included).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TOOLS := socat sshd tmux ss rsync git

.PHONY: all deps test lint bench fuzz clean

all: $(VENV)/.installed deps

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Debian packages, installed only when a tool is missing.
deps:
	@missing=""; for t in $(TOOLS); do command -v $$t >/dev/null 2>&1 || [ -x /usr/sbin/$$t ] || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to install:$$missing (apt-get install socat openssh-server tmux iproute2 rsync git)" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq socat openssh-server openssh-client tmux iproute2 rsync git >/dev/null; \
	fi

lint: all
	$(VENV)/bin/ruff check src tests $(wildcard bench fuzz)
	$(VENV)/bin/mypy

test: all lint
	$(PY) -m pytest -q

bench: all
	$(PY) bench/run.py

# Coverage-guided fuzzing (atheris) of the codec and the session; FUZZ_TIME seconds each.
fuzz: all
	$(PY) -m pip install -q atheris
	mkdir -p fuzz/corpus/session fuzz/corpus/frames fuzz/artifacts
	$(PY) fuzz/fuzz_frames.py fuzz/corpus/frames -max_total_time=$(or $(FUZZ_TIME),60) -artifact_prefix=fuzz/artifacts/
	$(PY) fuzz/fuzz_session.py fuzz/corpus/session -max_total_time=$(or $(FUZZ_TIME),60) -max_len=4096 -artifact_prefix=fuzz/artifacts/

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
