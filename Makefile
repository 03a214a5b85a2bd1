# Two commands for a fresh machine: `make run` and `make test`. For iterating, `make test-fast`
# runs every test not marked `slow` (no real processes or notebooks; under 4 minutes on 2 cores).
# Both create .venv when missing and install the project into it (editable, with
# the test extra), re-installing whenever pyproject.toml changes, and register the
# venv's Jupyter kernel `benchlib` (absolute interpreter path) for JupyterLab and papermill -k benchlib.
# `make lab` opens JupyterLab on notebooks/ with that kernel, on 127.0.0.1 only.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= outputs
# Extra JupyterLab options, e.g. make lab LAB_ARGS="--no-browser --ServerApp.port=8899"
LAB_ARGS ?=
# Jupyter refuses to start as root without --allow-root; our Dockerfile runs as root.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: run test test-fast test-yolo lab clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	$(BIN)/python -m ipykernel install --prefix $(VENV) --name benchlib --display-name "benchlib (.venv)"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/benchlib run params/local.yaml --out $(OUT)
	# A P95 budget a 2-core CPU can meet: nothing of local.yaml's is under 50 ms there.
	$(BIN)/benchlib report --out $(OUT) --latency-budget-ms 100
	@echo "open $(OUT)/report.html"

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# The same environment and lint, without the tests marked `slow`: for iteration, not instead of `make test`.
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow"

# The YOLO models' tests: installs the optional `yolo` extra (ultralytics, AGPL-3.0; its opencv
# needs the system's libGL.so.1 and glib) into .venv, then runs the tests marked `yolo`.
# `make test` skips them while ultralytics is absent, and runs them once it is installed.
$(VENV)/.installed-yolo: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,yolo]'
	touch $@

test-yolo: $(VENV)/.installed-yolo
	$(BIN)/python -m pytest -m yolo

# The notebooks' metadata name the `benchlib` kernel; new notebooks get it too.
# As root (in the container) --allow-root is passed; it still listens on 127.0.0.1 only.
lab: $(STAMP)
	$(BIN)/jupyter lab --ServerApp.root_dir=notebooks --ServerApp.ip=127.0.0.1 \
		--MappingKernelManager.default_kernel_name=benchlib $(ALLOW_ROOT) $(LAB_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache
