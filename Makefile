# cfrec developer commands. `make test` is self-contained: it creates .venv when missing,
# installs PyTorch (the CPU build where no NVIDIA GPU is present) and the project, then runs the suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
STAMP  := $(VENV)/.cfrec-installed
# Use the shared MovieLens copy beside the checkout when there is one (tests and demo);
# otherwise cfrec's own default data home (a user cache folder) applies.
ifneq ($(wildcard ../shared/datasets/ml-100k/u.data),)
export CFREC_DATA_HOME ?= $(abspath ../shared/datasets)
endif

.PHONY: install test test-fast demo notebooks bench docs lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	@if ! $(PY) -c "import torch" 2>/dev/null; then \
	  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
	    echo "NVIDIA GPU found: installing the default (CUDA) PyTorch build"; \
	    $(PIP) install --quiet "torch>=2.2,<3"; \
	  else \
	    echo "No GPU: installing the CPU build torch==$(TORCH_VERSION)"; \
	    $(PIP) install --quiet torch==$(TORCH_VERSION) || \
	    $(PIP) install --quiet torch==$(TORCH_VERSION) --index-url https://download.pytorch.org/whl/cpu; \
	  fi; \
	fi
	$(PIP) install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

# Two test workers on two cores: one BLAS/OpenMP thread each avoids oversubscription stalls.
test: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile -q

test-fast: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile -q -m "not slow and not browser"

demo: $(STAMP)
	$(VENV)/bin/cfrec quickstart

# Re-execute the course notebooks (notebooks/*.ipynb) from scratch and save them with their outputs
# (nbclient and ipykernel come with the dev and notebooks extras); about 2 minutes each on 2 cores.
notebooks: $(STAMP)
	$(PY) notebooks/run_notebooks.py --inplace

# The documentation site in site/: the docs/ pages, the notebooks as committed (not re-executed)
# and the API reference generated from the docstrings; --strict turns every warning (a dead
# reference, a docstring that disagrees with its signature) into a failure. Not with -q: mkdocs
# then lets warnings pass even under --strict.
docs: $(STAMP)
	$(PIP) install --quiet -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# Figures of README.md and docs/ that a cheap command regenerates (marked <!-- figure: NAME -->).
.PHONY: docs-figures
docs-figures: $(STAMP)
	$(PY) benchmarks/docs_figures.py

bench: $(STAMP)
	$(PIP) install --quiet -e ".[bench]"
	$(PY) benchmarks/surprise_folds.py

# Load test of `cfrec serve` on a loopback port (trains the model first): a BiasedMF of ML-100K by
# default; ARGS="--build ials-ml1m" for iALS of synthetic ML-1M, or ARGS="--model DIR".
.PHONY: bench-serve
bench-serve: $(STAMP)
	$(PY) benchmarks/serve_load.py $(if $(ARGS),$(ARGS),--build mf-ml100k)

# Speed and memory at scale (synthetic ML-10M and ML-25M, cfrec vs implicit and Surprise, one fit
# per process) and the ML-25M-size pipeline (load, split, fit, evaluate, save); options via ARGS,
# e.g. make bench-scale ARGS="--sizes ml-10m --json scale.json".
.PHONY: bench-scale bench-e2e
bench-scale: $(STAMP)
	$(PIP) install --quiet -e ".[bench]"
	$(PY) benchmarks/scale.py $(ARGS)

bench-e2e: $(STAMP)
	$(PIP) install --quiet -e ".[bench]"
	$(PY) benchmarks/ml25m_end_to_end.py $(ARGS)

# Static checks: ruff (style, bugs) and mypy (types). CI runs them after the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache build dist site .cache/mkdocs-jupyter src/*.egg-info
