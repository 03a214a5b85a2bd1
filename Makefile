# Two commands for a fresh machine: `make run` and `make test`.
# Both create .venv when missing and install the project into it (editable, with
# the test extra), re-installing whenever pyproject.toml changes, and register the
# venv's Jupyter kernel (absolute interpreter path) so notebooks run in it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= outputs

.PHONY: run test clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	$(BIN)/python -m ipykernel install --prefix $(VENV) --name benchlib --display-name "benchlib (.venv)"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/benchlib run params/local.yaml --out $(OUT)
	# P50 is the percentile that local.yaml's few requests per point can bound.
	$(BIN)/benchlib report --out $(OUT) --percentile p50 --latency-budget-ms 1000
	@echo "open $(OUT)/report.html"

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
