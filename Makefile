# The README's two commands are `make demo` and `make test`; both start from a
# fresh clone: they create .venv and install the project, its plugins and the
# test tools into it (again only when a setup.cfg or requirements file changes).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PLUGINS := $(sort $(dir $(wildcard plugins/*/setup.cfg)))

.PHONY: demo test lint bench system-deps clean

$(STAMP): setup.cfg setup.py requirements-test.txt $(wildcard plugins/*/setup.cfg)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e . $(addprefix -e ,$(PLUGINS)) -r requirements-test.txt
	touch $@

## make demo: run examples/crawler.py under the agent; events go to the terminal and demo-events.jsonl
demo: $(STAMP)
	rm -f demo-events.jsonl
	$(BIN)/monitor-agent run --transports log,jsonl:demo-events.jsonl --max-memory-usage 160MB \
		--memory-monitor-period 0.2 -- $(BIN)/python examples/crawler.py
	@echo "---- demo-events.jsonl ----"
	@$(BIN)/python -c "import json,sys; [print(e['event'], e['data'].get('greenlet') or '', e['data'].get('blocking_time') or e['data'].get('mem_usage')) for e in map(json.loads, open('demo-events.jsonl'))]"

## make test: the whole test suite (installs the Debian tools the tests need when missing)
test: $(STAMP) system-deps
	$(BIN)/python -m pytest

system-deps:
	bash scripts/system-deps.sh

lint: $(STAMP)
	$(BIN)/python -m ruff check monitor_agent plugins tests bench examples
	$(BIN)/python -m mypy monitor_agent

bench: $(STAMP) system-deps
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build dist *.egg-info demo-events.jsonl
