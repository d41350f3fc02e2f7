# One set of commands for people and CI (.ci/run calls `make test` and `make lint`).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install broker cluster cluster-stop postgres prometheus mosquitto demo docs lock test unit lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

broker:
	scripts/ensure-broker.sh

# Three RabbitMQ nodes clustered on this machine (AMQP 5681-5683), data in CLUSTER_DIR.
CLUSTER_DIR ?= .cluster

cluster:
	scripts/cluster.sh start $(CLUSTER_DIR)

cluster-stop:
	scripts/cluster.sh stop $(CLUSTER_DIR)

demo: install broker
	$(BIN)/python -m demo $(if $(KEEP),--keep)

# docs/settings-reference.md from the settings models of esb and every installed adapter.
docs: install
	PYTHONPATH=. $(BIN)/python scripts/settings_reference.py

# deploy/requirements.lock: what the image installs (esb's dependencies, the built-in adapters'
# extras, the build backend), every file's hash pinned; for Python 3.11 on any platform.
lock: install
	$(BIN)/uv pip compile pyproject.toml deploy/requirements.in \
		--extra postgres --extra email --extra mqtt \
		--universal --python-version 3.11 --generate-hashes \
		--custom-compile-command "make lock" --quiet -o deploy/requirements.lock

postgres:
	scripts/ensure-postgres.sh

prometheus: broker
	scripts/ensure-prometheus.sh

mosquitto:
	scripts/ensure-mosquitto.sh

test: install broker postgres prometheus mosquitto
	$(BIN)/pytest

unit: install
	$(BIN)/pytest tests/unit tests/adapters/jsonl

lint: install
	$(BIN)/ruff check esb adapters demo tests bench scripts
	$(BIN)/ruff format --check esb adapters demo tests bench scripts
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo
	$(BIN)/hadolint --no-color deploy/Dockerfile

# `make bench QUICK=1` for a short smoke run; PIPELINE_ARGS passes options to bench/pipeline.py.
bench: install broker postgres mosquitto
	@[ $(VENV)/.bench-stamp -nt pyproject.toml ] || \
		{ $(BIN)/pip install --quiet -e '.[dev,bench]' && touch $(VENV)/.bench-stamp; }
	$(BIN)/python bench/pipeline.py $(if $(QUICK),--quick) $(PIPELINE_ARGS)
	$(BIN)/python bench/throughput.py $(if $(QUICK),--count 2000 --rounds 1,--count 5000)
	$(BIN)/python bench/routing.py $(if $(QUICK),--repeat 200 --count 500,--count 1000)
	$(BIN)/python bench/sql_sink.py $(if $(QUICK),--count 1000 --rounds 1)
	$(BIN)/python bench/mqtt_source.py $(if $(QUICK),--rounds 1,--rounds 2)
	$(BIN)/python bench/partitions.py $(if $(QUICK),--count 1000)

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
