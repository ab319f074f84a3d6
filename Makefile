# Set-up and everyday commands. Torch is installed first, alone, and everything else under
# constraints.txt so that pip never swaps in a multi-GB CUDA build of torch.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
EXTRAS ?= test,hf,mt,graph
DEMO_OUT ?= runs/demo
# Test processes (pytest-xdist): one per core, at most 4 (every test runs on one torch thread).
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)

.PHONY: install demo test test-all bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

demo: install
	$(VENV)/bin/sst compare lm-demo --tuned lm-demo --out $(DEMO_OUT)

test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

test-all: install
	$(PY) -m pytest -q -m "" -n $(TEST_WORKERS) --dist worksteal

clean:
	rm -rf $(VENV) runs .pytest_cache
