# Two commands do all set-up: `make demo` and `make test` (each creates .venv on a fresh machine).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo test lint bench readme clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,tracking,bench]"
	$(PY) -m pip install -q --no-deps "lmms-eval>=0.6,<0.8"  # its full install wants torchvision (README)
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
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .

bench: install
	$(PY) -m benchmarks.run

readme: install
	$(PY) scripts/update_readme_config.py

clean:
	rm -rf $(VENV) runs .pytest_cache
