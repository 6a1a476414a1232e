# aisaas: `make run` starts the embedded default, `make test` runs the whole suite (see README.md).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
DEVLLM_PORT ?= 8001

.PHONY: run test install lint format bench-ttft bench-timeline bench-gate bench-metering clean

# Re-install only when the requirements change.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required (the project runs on Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

# The embedded default: SQLite, local memory, eager Celery and the built-in dev LLM. Nothing to configure.
run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py demo_user --url http://127.0.0.1:$(PORT)/
	@trap 'kill 0' EXIT INT TERM; \
	$(PY) -m aisaas.devllm --port $(DEVLLM_PORT) & \
	$(VENV)/bin/daphne -b 127.0.0.1 -p $(PORT) aisaas.asgi:application

# The whole suite. With DATABASE_URL/REDIS_URL set (as .ci/run does) it runs on PostgreSQL and Redis.
test: install
	$(PY) manage.py makemigrations --check --dry-run
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench-ttft: install
	$(PY) bench/ttft.py

bench-timeline: install
	$(PY) bench/timeline.py

bench-gate: install
	$(PY) bench/gate.py

bench-metering: install
	$(PY) bench/metering.py

clean:
	rm -rf $(VENV) db.sqlite3* test_db.sqlite3* staticfiles
