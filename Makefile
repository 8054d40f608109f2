# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# A CPU build of torch that satisfies pyproject's `torch>=2.1`; installed first so that pip
# does not pull a multi-GB CUDA build. Users elsewhere get their own torch from the requirement.
TORCH_PIN ?= torch==2.13.0

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[test,hpc,zarr,bench,astro]"
	touch $@

# --overwrite: a second `make demo` replaces the first one's checkpoint and sweep (kept in
# outputs/demo/previous/); `rho-workflow run pipelines/demo.yaml --resume` continues one instead.
demo: install
	$(VENV)/bin/rho-workflow run pipelines/demo.yaml --overwrite

test: install
	$(PY) -m pytest -q -m "not slurm" tests

clean:
	rm -rf outputs .pytest_cache
