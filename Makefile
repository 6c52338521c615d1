# queue-forensics — newcomer commands:  make demo   |   make test
# Everything is installed from a fresh clone: a virtualenv in .venv/ and the pinned npm
# packages (bull, bullmq) the tests drive. Tests start their own redis-server.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
NODE_DIR := tests/node
EXAMPLE  := snapshots/example

.PHONY: setup node test demo example bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "queue-forensics needs Python >= 3.11 (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

node: $(NODE_DIR)/node_modules/.installed

$(NODE_DIR)/node_modules/.installed: $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

test: setup node
	$(BIN)/pytest -q

demo: setup
	$(BIN)/forensics summary $(EXAMPLE)
	@echo
	$(BIN)/forensics diagnose $(EXAMPLE)
	@echo
	@echo "rendering the postmortem (papermill + nbconvert) ..."
	$(BIN)/forensics report $(EXAMPLE) --out build/postmortem.html

# Regenerate the shipped example snapshot from a real incident (needs node + redis-server).
example: setup node
	$(BIN)/python scripts/make_example.py $(EXAMPLE)

bench: setup node
	$(BIN)/python bench/capture_bench.py
	$(BIN)/python bench/logs_bench.py

clean:
	rm -rf $(VENV) $(NODE_DIR)/node_modules .pytest_cache
