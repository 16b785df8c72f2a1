# One command each: `make demo` sets everything up and runs the embedded demo; `make test` runs every check.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PINS   := deploy/constraints.txt

.PHONY: demo test setup lint typecheck review-screenshot lock

$(BIN)/streamproc: pyproject.toml $(PINS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c $(PINS) -e '.[dev]'
	@touch $@

setup: $(BIN)/streamproc
	$(BIN)/streamproc models prepare

demo: setup
	$(BIN)/streamproc demo

lint: setup
	$(BIN)/ruff check streamproc tests bench
	$(BIN)/ruff format --check streamproc tests bench

typecheck: setup
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

# docs/review-candidate.png (shown in the README): the browser test's screenshot of the candidate page.
review-screenshot: setup
	STREAMPROC_SCREENSHOT=docs/review-candidate.png $(BIN)/pytest -q tests/desk/test_console_browser.py

# deploy/constraints.txt anew: the newest versions pyproject.toml allows, resolved in a scratch venv.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -e '.[dev]'
	{ sed -n '/^#/p' $(PINS); .lock-venv/bin/pip freeze --exclude-editable; } > $(PINS).new
	mv $(PINS).new $(PINS) && rm -rf .lock-venv
