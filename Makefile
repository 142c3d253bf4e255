# The two commands: `make demo` runs a whole site on this host, `make test` runs the tests.
# Each sets up what it needs: a virtual environment in .venv, and (for tests) mosquitto.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PORT   ?= 8000
ARGS   ?=

.PHONY: demo test lint bench chaos clean fuzz lock

$(STAMP): pyproject.toml deploy/bootstrap.sh
	@test -x $(PY) || $$(sh deploy/bootstrap.sh python) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,llrp]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/floorsync demo --port $(PORT) $(ARGS)

test: $(STAMP)
	@sh deploy/bootstrap.sh mosquitto
	@sh deploy/bootstrap.sh nats
	@sh deploy/bootstrap.sh systemd
	-@sh deploy/bootstrap.sh faketime
	@sh deploy/bootstrap.sh chromium
	@sh deploy/bootstrap.sh postgresql
	$(PY) -m pytest $(ARGS)

# ruff over every source folder (floorsync/ reaches edge/, server/, devices/ through its links,
# which ruff does not follow, so each file is checked once); mypy over the installed names.
lint: $(STAMP)
	$(VENV)/bin/ruff check edge server devices floorsync tests
	$(VENV)/bin/mypy

bench: $(STAMP)
	@sh deploy/bootstrap.sh mosquitto
	$(VENV)/bin/floorsync bench $(ARGS)

# The fault campaign: >= 1,000 faults over both paths, then the cluster scenarios (three NATS
# nodes, replicas, PostgreSQL: floorsync/chaos/cluster.py); exits 1 on any loss or double.
chaos: $(STAMP)
	@sh deploy/bootstrap.sh mosquitto
	-@sh deploy/bootstrap.sh faketime
	@sh deploy/bootstrap.sh nats
	@sh deploy/bootstrap.sh postgresql
	$(VENV)/bin/floorsync chaos --faults 1000 $(ARGS)

# Pinned, hashed dependencies for deployments, one lock a role of deploy/install.sh (which
# installs it with --require-hashes): edge, server, and central (a replica of a network of sites,
# deploy/multisite: PostgreSQL store, NATS replica consumer). tests/deploy/test_locks.py reads the
# roles' extras from the lines below. Run monthly or on a security advisory, then the tests,
# then commit deploy/constraints/ (deploy/README.md). Upgrades every pin within pyproject's ranges.
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --upgrade --quiet \
	--custom-compile-command 'make lock'
lock: $(STAMP)
	$(VENV)/bin/uv pip compile pyproject.toml --extra edge $(LOCK_FLAGS) -o deploy/constraints/edge.txt
	$(VENV)/bin/uv pip compile pyproject.toml --extra server $(LOCK_FLAGS) -o deploy/constraints/server.txt
	$(VENV)/bin/uv pip compile pyproject.toml --extra server --extra postgresql --extra cluster \
		$(LOCK_FLAGS) -o deploy/constraints/central.txt

# Fuzzing, longer than CI's: the hypothesis fuzz tests (tests/fuzz) with the "long" profile,
# then each coverage-guided atheris target (the `fuzz` extra, x86-64 Linux) for FUZZ_SECONDS.
# Crash inputs land in FUZZ_ARTIFACTS; each one found becomes a regression test (an @example).
FUZZ_SECONDS   ?= 60
FUZZ_TARGETS   ?= framing wedge codes epcmatch vendor-json wire replay config settings
FUZZ_ARTIFACTS ?= $(CURDIR)/build/fuzz
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=long $(PY) -m pytest -p no:cacheprovider tests/fuzz $(ARGS)
	@if $(PY) -c "import atheris" 2>/dev/null || { $(PY) -m pip install --quiet -e '.[fuzz]' \
			&& $(PY) -c "import atheris" 2>/dev/null; }; then \
		for target in $(FUZZ_TARGETS); do \
			echo "== atheris $$target ($(FUZZ_SECONDS) s)"; \
			FUZZ_ARTIFACTS=$(FUZZ_ARTIFACTS) FUZZ_CORPUS=$(FUZZ_ARTIFACTS)/corpus \
				$(PY) -m tests.fuzz.atheris_targets $$target \
				-max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || exit 1; \
		done; \
	else echo "atheris does not install on this machine: coverage-guided targets skipped"; fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
