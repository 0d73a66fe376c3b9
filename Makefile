# The two commands that matter: `make serve` and `make test`. Only Python 3.11+ and make needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install serve test lint format schema bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# Embedded default: SQLite under ./var, in-process cache, demo data on first run.
# DEV ONLY: QUDAO_DEV_OPEN_ACCESS lets requests without a token act as an HQ admin until the
# OAuth server lands. Set DATABASE_URL / REDIS_URL to use PostgreSQL and Redis instead.
serve: install
	$(BIN)/qudao migrate
	$(BIN)/qudao seed --demo
	@echo "Demo data: no token needed (DEV ONLY open access). Try in GraphiQL:"
	@echo "  { partners(first: 5) { edges { node { id name } } } }"
	QUDAO_DEV_OPEN_ACCESS=1 $(BIN)/qudao serve

# QUDAO_TEST_DATABASE_URL / QUDAO_TEST_REDIS_URL add PostgreSQL / Redis runs of the suite.
test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

schema: install
	$(BIN)/qudao export-schema

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache
