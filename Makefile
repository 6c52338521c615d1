# queue-forensics — newcomer commands:  make demo   |   make test
# Everything is installed from a fresh clone: a virtualenv in .venv/ and the pinned npm
# packages (bull, bullmq) the tests drive. Tests start their own redis-server.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
NODE_DIR := tests/node
EXAMPLE  := snapshots/example
APP_EXAMPLE := snapshots/pdflab

.PHONY: setup node browser bytecode test demo example pdflab bench bench-quick clean lock fuzz

setup: $(VENV)/.installed

# Installs exactly the versions in constraints.txt: the set the tests last passed with.
$(VENV)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "queue-forensics needs Python >= 3.11 (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	@touch $@

# Re-resolve the newest versions pyproject.toml allows, in a fresh virtualenv, and pin them in
# constraints.txt. Then run `make test` and commit constraints.txt if it passes.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade pip
	.lock-venv/bin/pip install --quiet '.[test]'
	{ echo "# The versions make setup installs: the set the tests passed with. Regenerate with make lock."; \
	  .lock-venv/bin/pip freeze --all --exclude-editable | grep -v -i '^queue[-_]forensics'; } > constraints.txt
	rm -rf .lock-venv build
	@echo "constraints.txt rewritten; run make test, then commit it"

# Property tests with fresh random inputs and many more examples than make test runs.
fuzz: setup
	FUZZ_FRESH=1 FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-5000} $(BIN)/pytest -q tests/test_fuzz.py -p no:cacheprovider

node: $(NODE_DIR)/node_modules/.installed

$(NODE_DIR)/node_modules/.installed: $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The package's bytecode, compiled once: where PYTHONDONTWRITEBYTECODE is set (as on this
# project's machines) every forensics process would otherwise compile it again (0.1-0.3 s).
bytecode: setup
	@$(BIN)/python -m compileall -q forensics

# make test PYTEST_ARGS='-k faults --durations=20' passes options through to pytest.
test: setup node browser bytecode
	$(BIN)/pytest -q $(PYTEST_ARGS)

# Debian's chromium, for the tests that open the report in a real browser (tests/test_hostile.py).
# Installed when missing and this user may (root with apt-get); otherwise those tests are skipped
# and say why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests ..."; \
	    apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
	      || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; } \
	      || echo "chromium could not be installed: the browser tests will be skipped"; \
	  else echo "chromium is missing (Debian: apt-get install chromium): the browser tests will be skipped"; fi; }

# PDFLab's incident (snapshots/pdflab), joined with the source that made it (snapshots/pdflab-app,
# its scan kept in the snapshot): every finding points at its file:line.
demo: setup bytecode
	$(BIN)/forensics summary $(APP_EXAMPLE)
	@echo
	$(BIN)/forensics diagnose $(APP_EXAMPLE)
	@echo
	@echo "rendering the postmortem (papermill + nbconvert) ..."
	$(BIN)/forensics report $(APP_EXAMPLE) --out build/postmortem.html

# Regenerate the shipped example snapshot from a real incident (needs node + redis-server).
example: setup node
	$(BIN)/python scripts/make_example.py $(EXAMPLE)

# Regenerate snapshots/pdflab by running the app in snapshots/pdflab-app into its incident.
pdflab: setup node
	$(BIN)/python scripts/make_pdflab.py

# One table from one dataset (1,000,000 real BullMQ 5 jobs; built once, kept in bench/.data/):
# forensics vs a hand-tuned reader vs the libraries' own getJobs, then diagnose, report and a
# 100-capture series; then the realistic-payload table (megabyte base64 documents, a 100 MB
# events stream, JSON documents: capture with and without redaction, phase by phase).
# bench-quick: the same on 100,000 jobs.
bench: setup node
	$(BIN)/python bench/scale_bench.py
	$(BIN)/python bench/payload_bench.py
	$(BIN)/python bench/logs_bench.py
	$(BIN)/python bench/scan_bench.py
	$(BIN)/python bench/pg_bench.py
	$(BIN)/python bench/draw_bench.py

bench-quick: setup node
	$(BIN)/python bench/scale_bench.py --quick
	$(BIN)/python bench/payload_bench.py
	$(BIN)/python bench/draw_bench.py --queues 100

clean:
	rm -rf $(VENV) $(NODE_DIR)/node_modules .pytest_cache
