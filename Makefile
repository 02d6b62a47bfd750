# The README's two commands: `make demo` (train the bundled tiny example locally) and `make test`.
# Both build .venv from nothing; torch is pinned by constraints/cpu.txt so CPU machines never pull CUDA wheels.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
EXTRAS ?= runtime,dev,ssh,s3,deepspeed,ray,modal
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints/cpu.txt | cksum | cut -d' ' -f1)

.PHONY: demo test unit lint venv sky-venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints/cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints/cpu.txt torch==2.13.0
	$(PIP) install -q -c constraints/cpu.txt -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-*
	touch $@

# A finished run stays finished (a second `train` only says where its outputs are): the demo starts afresh.
demo: venv
	rm -rf .demo/outputs
	mkdir -p .demo
	cd .demo && ../$(VENV)/bin/mudpuppy fetch examples --force
	cd .demo && ../$(VENV)/bin/mudpuppy train examples/tiny-alpaca.yml

# SkyPilot pins click<8.2, which current huggingface-hub cannot use: it lives in its own .venv-sky.
sky-venv:
	bash tests/infra/install-sky.sh

# MUDPUPPY_REQUIRE_EXTRAS: any skip (missing extra, service, root, port) fails; --durations lists the slowest 15.
# Two xdist workers; tests that start services are grouped onto one of them (tests/conftest.py).
# Tests that replay a git checkout of Axolotl's main are deselected (CI has no checkout; the PyPI sdist test runs).
test: venv lint sky-venv
	bash tests/infra/install-deps.sh
	MUDPUPPY_REQUIRE_EXTRAS=1 $(PY) -m pytest -q --durations=15 -n 2 --dist loadgroup -m "not axolotl_checkout"

unit: venv
	$(PY) -m pytest -q tests/unit

# mypy needs the package under its real name; the repo root is `mudpuppy`, so type-check through a link.
lint: venv
	$(VENV)/bin/ruff check .
	mkdir -p $(VENV)/typecheck && ln -sfn ../.. $(VENV)/typecheck/mudpuppy
	cd $(VENV)/typecheck && ../bin/mypy --config-file ../../pyproject.toml -p mudpuppy.launcher -p mudpuppy.backends

clean:
	rm -rf $(VENV) .venv-sky .demo build dist *.egg-info
