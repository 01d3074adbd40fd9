# Two commands do all set-up: `make demo` and `make test` (each creates .venv on a fresh machine).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo test test-fast test-floors lint bench docs docs-serve docs-strict clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,tracking,bench,docs]"
	$(PY) -m pip install -q --no-deps "lmms-eval>=0.6,<0.8"  # its full install wants torchvision (docs/full-scale.md)
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/unihetero reproduce v2_demo --preset demo --backend local --workers 2 --runs-dir runs/demo-v2 \
		--out reports/demo --bootstrap 0
	@$(PY) -m reports.glance reports/demo

test: install
	@if [ "$$(id -u)" = 0 ] && [ -x scripts/slurm_cluster.sh ]; then \
		scripts/slurm_cluster.sh up || echo "Slurm cluster unavailable: Slurm tests will skip (they fail under CI=true)"; fi
	$(PY) -m ruff check .
	$(MAKE) --no-print-directory docs-strict
	$(PY) -m pytest -q $(PYTEST_ARGS)

# under 2 minutes: the tests not marked slow, slurm or ray, on 2 pytest-xdist workers, under coverage (subprocesses
# included); fails when a source module runs no line beyond its imports (scripts/module_coverage.py)
test-fast: install
	$(PY) -m ruff check .
	rm -f .coverage.fast*
	$(PY) -m coverage run --parallel-mode --data-file=.coverage.fast -m pytest -q -p no:cacheprovider -n 2 \
		-m "not slow and not slurm and not ray" $(PYTEST_ARGS)
	$(PY) -m coverage combine -q --data-file=.coverage.fast
	$(PY) scripts/module_coverage.py .coverage.fast

# the tests of the modules that use ray, wandb, mlflow, tensorboard, transformers, lmms-eval and submitit, run against
# the floors pyproject.toml allows, in a fresh venv (not in CI: it downloads the old versions)
FLOORS_VENV ?= .venv-floors
FLOORS_TESTS ?= tests/test_tracking.py tests/test_lmms_eval.py tests/test_sweep_ray.py tests/test_ray_connect.py \
	tests/test_hf_backbones.py tests/test_slurm_cluster.py tests/test_sweep_slurm.py
test-floors:
	rm -rf $(FLOORS_VENV) && python3 -m venv $(FLOORS_VENV)
	$(FLOORS_VENV)/bin/python -m pip install -q --upgrade pip
	$(FLOORS_VENV)/bin/python -m pip install -q torch==2.13.0
	python3 scripts/dependency_floors.py > $(FLOORS_VENV)/floors.txt
	$(FLOORS_VENV)/bin/python -m pip install -q -c $(FLOORS_VENV)/floors.txt -e ".[test,tracking,bench]"
	$(FLOORS_VENV)/bin/python -m pip install -q --no-deps "$$(grep '^lmms-eval==' $(FLOORS_VENV)/floors.txt)"
	$(FLOORS_VENV)/bin/python -m pip list 2>/dev/null | grep -iE '^(ray|wandb|mlflow|tensorboard|transformers|lmms.eval|submitit) '
	$(FLOORS_VENV)/bin/python -m pytest -q -p no:cacheprovider $(FLOORS_TESTS)

lint: install
	$(PY) -m ruff check .

bench: install
	$(PY) -m benchmarks.run

# the docs site: regenerate the reference pages, then build strictly (a warning, a broken link or a page missing
# from the table of contents fails); docs-strict builds without regenerating (make test: the pages must be current)
SPHINX := $(PY) -m sphinx -E -W --keep-going -q -b html docs docs/_build/html
docs: install
	$(PY) scripts/docs_reference.py
	$(SPHINX)
	@echo "docs: docs/_build/html/index.html"

docs-strict: install
	$(SPHINX)

docs-serve: docs
	$(PY) -m http.server --directory docs/_build/html 8000

clean:
	rm -rf $(VENV) $(FLOORS_VENV) runs .pytest_cache docs/_build .coverage.fast
