# Set-up and everyday targets. `make build-qa` and `make test` are all a fresh
# machine needs: both create .venv and install on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := dicom,model,seg,distributed,video,agent,dev
STAMP := $(VENV)/.volvqa-installed
DATASET ?= phantom-demo
WORKERS ?= 2
PYTEST_WORKERS ?= 2

.PHONY: install test test-fast lint docs build-qa bench clean

install: $(STAMP)

# Reinstalls only when the dependency files change.
$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	touch $@

test: lint docs
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) tests

# A representative subset (every package, no full build): under 2 minutes.
test-fast: lint
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) -m "not slow and not bench" tests

lint: install
	$(BIN)/ruff check volvqa tests benchmarks

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

build-qa: install
	$(BIN)/volvqa build-qa data_manifests/$(DATASET).yaml --out out/$(DATASET) --workers $(WORKERS)

bench: install
	$(BIN)/python -m pytest -q -s -m bench -p no:randomly benchmarks

clean:
	rm -rf out .pytest_cache
