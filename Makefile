# The two commands of the README:
#   make reproduce   install what is needed, then reproduce the paper's findings on the model organism
#   make test        install what the tests need, then run them (CI runs this and make test-slow: .ci/run)
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/reproduce
# CPU installs pin torch to the CPU wheel; GPU users keep their own torch: make install CONSTRAINTS=
CONSTRAINTS ?= -c requirements/cpu.txt

.PHONY: install install-test reproduce test test-slow lint bench

$(BIN)/python:
	$(PY) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install -q $(CONSTRAINTS) -e .
	$(BIN)/pip install -q --no-deps -r requirements/nodeps.txt

install-test: install
	$(BIN)/pip install -q $(CONSTRAINTS) -e ".[test,inspect]"
	@# headless Chromium for the report test (Debian packages; skipped with a note where apt is not usable)
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
		>/dev/null; } || echo "chromium not installed: the browser test of report.html will be skipped"

reproduce: install
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/deepalign reproduce --out $(OUT)

test: install-test
	$(BIN)/ruff check src tests bench
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/pytest -q -m "not slow"

test-slow: install-test
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/pytest -q -m slow

bench: install
	$(BIN)/python bench/run_all.py
