# aisaas: `make run` starts the embedded default, `make test` runs the whole suite (see README.md).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
DEVLLM_PORT ?= 8001

.PHONY: run test install lock lint format bench-ttft bench-timeline bench-gate bench-metering bench-peer clean

# Re-install only when the locks change. Every package, transitive ones included, is pinned with its hashes
# (requirements*.txt, compiled from requirements*.in by `make lock`): pip refuses anything else.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required (the project runs on Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

# Commands run beside PostgreSQL and Redis: those DATABASE_URL and REDIS_URL name, or else embedded servers
# started from Python packages in .embedded/<target>/ and stopped afterwards (aisaas/embedded.py).
SERVICES = $(PY) -m aisaas.embedded --folder .embedded/$@ --

# The embedded default: embedded PostgreSQL and Redis (data kept in .embedded/run/), eager Celery and the
# built-in dev LLM. Nothing to configure.
run: install
	DEVLLM_PORT=$(DEVLLM_PORT) $(SERVICES) bash -c '\
	$(PY) manage.py migrate --noinput && \
	$(PY) manage.py demo_user --url http://127.0.0.1:$(PORT)/ && { \
	trap "kill 0" EXIT INT TERM; \
	$(PY) -m llm.devllm --port $(DEVLLM_PORT) & \
	$(VENV)/bin/daphne -b 127.0.0.1 -p $(PORT) aisaas.asgi:application; }'

# The whole suite, on the servers DATABASE_URL/REDIS_URL name (as .ci/run does) or on embedded ones.
test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(SERVICES) bash -c '$(PY) manage.py makemigrations --check --dry-run && $(VENV)/bin/pytest $(PYTEST_ARGS)'

# After editing requirements*.in: pin and hash every dependency again.
PIP_COMPILE = $(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-header \
	--no-emit-index-url --no-emit-find-links
lock: install
	$(PIP_COMPILE) --output-file requirements.txt requirements.in
	$(PIP_COMPILE) --output-file requirements-dev.txt requirements-dev.in

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench-ttft: install
	$(SERVICES) $(PY) bench/ttft.py

bench-timeline: install
	$(SERVICES) $(PY) bench/timeline.py

bench-gate: install
	$(SERVICES) $(PY) bench/gate.py

bench-metering: install
	$(SERVICES) $(PY) bench/metering.py

bench-peer: install
	$(SERVICES) $(PY) bench/peer.py

clean:
	rm -rf $(VENV) .embedded staticfiles
