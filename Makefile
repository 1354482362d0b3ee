# The two commands a new user runs: `make demo` and `make test`.
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_DIR := .reflow/demo-app

.PHONY: install test lint typecheck unit demo bench bench-smoke clean

$(STAMP): pyproject.toml setup.py reflow/_handoff.c
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,redis,media]'
	@touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff format --check reflow tests bench
	$(BIN)/ruff check reflow tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict reflow bench tests

# pytest exits 5 when it collected nothing: that is a failure here, never a pass.
unit: $(STAMP)
	@$(BIN)/pytest -W error --cov=reflow --cov-report=term:skip-covered -q $(PYTEST_ARGS); \
	  rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest ran no tests: failing"; exit 1; fi; exit $$rc

test: lint typecheck unit bench-smoke

demo: $(STAMP)
	@test -f $(DEMO_DIR)/app.py || $(BIN)/reflow new $(DEMO_DIR) --name demo
	@echo "open http://127.0.0.1:8080/ -- it says how to publish an article ($(DEMO_DIR)/README.md)"
	cd $(DEMO_DIR) && ../../$(BIN)/reflow run app.py

bench: $(STAMP)
	$(BIN)/python bench/run.py

bench-smoke: $(STAMP)
	$(BIN)/python bench/run.py --smoke

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .coverage .coverage.* htmlcov
