# The two commands that matter: `make serve` and `make test`. Only Python 3.11+ and make needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install serve test fuzz lint format schema bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# Embedded default: SQLite under ./var, in-process cache, demo data and demo logins on first
# run (the seed prints the demo client secrets that once). Every API call needs a token.
# Set DATABASE_URL / REDIS_URL to use PostgreSQL and Redis instead.
serve: install
	$(BIN)/qudao migrate
	$(BIN)/qudao seed --demo
	@echo ""
	@echo "Tokens: the demo logins' password is qudao-demo-2026. For a token, in another shell:"
	@echo "  $(BIN)/qudao token --role hq_admin   (or channel_manager, marketer, partner_admin, store_staff)"
	@echo '  then in GraphiQL (Headers): {"Authorization": "Bearer <token>"} and try'
	@echo "  { partners(first: 5) { edges { node { id name } } } }"
	@echo "Or log in over OAuth (<secret>: the qudao-console client_secret the seed printed on its first run):"
	@echo "  curl -u qudao-console:<secret> -d grant_type=password -d username=admin@demo.qudao.dev -d password=qudao-demo-2026 http://127.0.0.1:8000/oauth/token"
	QUDAO_SMS_SENDER=log $(BIN)/qudao serve  # demo only: member login codes go to the log

# QUDAO_TEST_DATABASE_URL / QUDAO_TEST_REDIS_URL add PostgreSQL / Redis runs of the suite.
# One worker per core (pytest-xdist); each worker gets its own PostgreSQL database.
test: install
	$(BIN)/python -m pytest -n auto

# Generated GraphQL as every role against the app (tests/fuzz): `make test` runs a few cases
# per role and kind, this many more. QUDAO_FUZZ_EXAMPLES=N to choose; QUDAO_FUZZ_RANDOM=1 to
# draw new cases each run instead of the same ones.
fuzz: install
	QUDAO_FUZZ_EXAMPLES=$${QUDAO_FUZZ_EXAMPLES:-500} $(BIN)/python -m pytest -n auto tests/fuzz

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy  # over api/, as [tool.mypy] in pyproject.toml sets

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

schema: install
	$(BIN)/qudao export-schema

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache
