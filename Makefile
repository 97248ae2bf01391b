# Two commands: `make demo` and `make test`. Both build .venv from nothing but Python 3.11.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-inductor lint venv clean

$(STAMP): pyproject.toml Makefile
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel of torch lies on these machines; pin it first so nothing pulls a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,rl,play,video]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(VENV)/bin/pytest -q

# The compiled (inductor) step and fused kernels against eager: C++ compilation takes minutes, so it is not part of
# `make test`.
test-inductor: $(STAMP)
	SANAWM_INDUCTOR=1 $(VENV)/bin/pytest -q -m inductor

demo: $(STAMP)
	$(PY) -m agents.demo --out demo_out

clean:
	rm -rf $(VENV) demo_out .pytest_cache .ruff_cache
