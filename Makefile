# The two commands README.md opens with: `make demo` and `make test`.
# Both create the virtualenv and install the package on first use.
VENV ?= .venv
PYTHON ?= python3
BIN = $(VENV)/bin

.PHONY: demo test lint typecheck unit docs bench bench-quick clean

demo: $(VENV)/.installed
	$(BIN)/cohorts demo

test: lint typecheck unit docs

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks docs/examples docs_hooks

typecheck: $(VENV)/.installed
	$(BIN)/mypy

unit: $(VENV)/.installed
	$(BIN)/pytest

# The documentation site (mkdocs.yml), strict: a broken link or anchor fails.
# Its code examples run as doctests in `unit`.
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir build/site

bench: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[bench]'
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

# Every benchmark at a small size (a few minutes): the ratios, not the issues' full sizes.
bench-quick: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/bench_eval.py --customers 20000
	$(BIN)/python benchmarks/bench_sql.py --quick
	$(BIN)/python benchmarks/bench_groups.py --quick
	$(BIN)/python benchmarks/bench_host.py --quick
	$(BIN)/python benchmarks/bench_import.py --quick
	$(BIN)/python benchmarks/bench_campaigns.py --quick --backend memory sqlite

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[sql,postgres,excel,dev,docs]'
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .cache build/site
