# ganfit: the two Quickstart commands are `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU machines: the CPU wheel of torch 2.13.0. GPU machines: install a CUDA build of torch into
# $(VENV) first (see README); an importable torch is kept as it is.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test install assets bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

assets: install
	$(VENV)/bin/ganfit assets fetch

demo: assets
	$(VENV)/bin/ganfit fit examples/astronaut.png -o out/face.obj

test: assets
	$(PY) -m pytest -q

bench: assets
	$(PY) benchmarks/landmark_fit.py

clean:
	rm -rf $(VENV) out .pytest_cache
