# devpush: `make up` starts the platform, `make test` runs the whole test suite.
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: up test test-fast test-e2e test-corpus test-chaos test-ops lint install bench

$(BIN)/devpush: pyproject.toml
	bash scripts/bootstrap.sh $(VENV)

install: $(BIN)/devpush

up: install
	$(BIN)/devpush up

# Everything the tests need (podman, runner images, bubblewrap, git) is installed by
# scripts/test-setup.sh; then the suite runs in five steps: fast tests, end-to-end, the
# sample-app corpus built on both runtimes, chaos, and the production stack (compose, TLS,
# update, backup).
# Step 1 runs in two pytest processes (pytest-xdist): each has its own PostgreSQL, Redis and
# platforms, and a module's tests stay in one process. The steps that run whole platforms
# (end-to-end, corpus, chaos, ops) run one test at a time: they time drains, kills and faults.
SLOW := e2e or corpus or chaos or ops
PARALLEL ?= -n 2 --dist loadscope
# Short temp paths, one per step (emptied when it starts): unix sockets live under them.
TEST_TMP ?= /tmp/devpush-tests

test: install
	bash scripts/test-setup.sh
	@echo "==> step 1/5: unit and integration tests"
	$(BIN)/pytest -m "not ($(SLOW))" $(PARALLEL) --basetemp=$(TEST_TMP)-fast $(PYTEST_ARGS)
	@echo "==> step 2/5: end-to-end tests (real platform processes, Traefik, Podman)"
	$(BIN)/pytest -m e2e --timeout 900 --basetemp=$(TEST_TMP)-e2e $(PYTEST_ARGS)
	@echo "==> step 3/5: sample apps (Flask, Django, FastAPI, Next.js, Vite, ...) on both runtimes"
	$(BIN)/pytest -m corpus --timeout 1200 --basetemp=$(TEST_TMP)-corpus $(PYTEST_ARGS)
	@echo "==> step 4/5: chaos scenarios (faults injected into a real platform)"
	$(BIN)/pytest -m chaos --timeout 900 --basetemp=$(TEST_TMP)-chaos $(PYTEST_ARGS)
	@echo "==> step 5/5: production operations (compose stack, TLS, update, backup/restore)"
	$(BIN)/pytest -m ops --timeout 1200 --basetemp=$(TEST_TMP)-ops $(PYTEST_ARGS)

test-fast: install
	bash scripts/test-setup.sh
	$(BIN)/pytest -m "not ($(SLOW))" $(PARALLEL) --basetemp=$(TEST_TMP)-fast $(PYTEST_ARGS)

test-e2e: install
	bash scripts/test-setup.sh
	$(BIN)/pytest -m e2e --timeout 900 --basetemp=$(TEST_TMP)-e2e $(PYTEST_ARGS)

test-corpus: install
	bash scripts/test-setup.sh
	$(BIN)/pytest -m corpus --timeout 1200 --basetemp=$(TEST_TMP)-corpus $(PYTEST_ARGS)

test-chaos: install
	bash scripts/test-setup.sh
	$(BIN)/pytest -m chaos --timeout 900 --basetemp=$(TEST_TMP)-chaos $(PYTEST_ARGS)

test-ops: install
	bash scripts/test-setup.sh
	$(BIN)/pytest -m ops --timeout 1200 --basetemp=$(TEST_TMP)-ops $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# Every benchmark, one after another: deploy pipeline, builds, logs, control plane under load.
bench: install
	bash scripts/test-setup.sh
	$(BIN)/python bench/deploy.py
	$(BIN)/python bench/builds.py
	$(BIN)/python bench/logs.py
	$(BIN)/python bench/control_plane.py
