# devpush: `make up` starts the platform, `make test` runs the whole test suite.
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: up test test-fast test-e2e lint install bench

$(BIN)/devpush: pyproject.toml
	bash scripts/bootstrap.sh $(VENV)

install: $(BIN)/devpush

up: install
	$(BIN)/devpush up

# Everything the tests need (podman, runner images, bubblewrap, git) is installed by
# scripts/test-setup.sh; then the suite runs in two steps: fast tests, then end-to-end.
test: install
	bash scripts/test-setup.sh
	@echo "==> step 1/2: unit and integration tests"
	$(BIN)/pytest -m "not e2e" $(PYTEST_ARGS)
	@echo "==> step 2/2: end-to-end tests (real platform processes, Traefik, Podman)"
	$(BIN)/pytest -m e2e --timeout 900 $(PYTEST_ARGS)

test-fast: install
	bash scripts/test-setup.sh
	$(BIN)/pytest -m "not e2e" $(PYTEST_ARGS)

test-e2e: install
	bash scripts/test-setup.sh
	$(BIN)/pytest -m e2e --timeout 900 $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: install
	bash scripts/test-setup.sh
	$(BIN)/python bench/deploy.py
