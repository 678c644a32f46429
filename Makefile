# ddbvault: `make demo` shows the whole DR cycle on this machine, `make test` runs the suite.
SPARK ?= 3.5
PYTHON ?= python3
ifeq ($(SPARK),3.5)
VENV := .venv
EXTRA := spark
else
VENV := .venv-spark$(SPARK)
EXTRA := spark$(subst .,,$(SPARK))
endif
PY := $(VENV)/bin/python
JARS := .jars/spark-$(SPARK)
PYTEST_ARGS ?=

# ddbvault's own JVM code (the export's item codec), compiled against the installed pyspark's jars: bytecode for
# Java 8 on Spark 3.5 (so one jar serves EMR 7 and emr-spark-8), Java 17 on Spark 4.0 (its jars need it).
JVM_JAR := $(JARS)/ddbvault-jvm.jar
JVM_SRC := $(wildcard jvm/src/ddbvault/jvm/*.java)
JAVA_RELEASE := $(if $(filter 3.5,$(SPARK)),8,17)

.DEFAULT_GOAL := help
.PHONY: help setup jars jvm test smoke lint lint-deploy emr-node demo bench bench-node package clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'
	@echo "  SPARK=3.5 (default: pyspark 3.5 + Delta 3.3, EMR 7) or SPARK=4.0 (pyspark 4.0 + Delta 4.0, emr-spark-8)"

setup: $(VENV)/.installed $(JARS)/.fetched $(JVM_JAR) ## venv with ddbvault, Spark, Delta, test tools; Delta/s3a jars; ddbvault's JVM codec

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRA),test,bench]"
	touch $@

jars: $(JARS)/.fetched ## fetch the Delta and s3a jars for SPARK from Maven Central into .jars/

$(JARS)/.fetched: build/pom.xml
	mvn -q -B -f build/pom.xml -P spark-$(SPARK) dependency:copy-dependencies
	touch $@

jvm: $(JVM_JAR) ## compile ddbvault's JVM codec into .jars/spark-SPARK/ddbvault-jvm.jar

$(JVM_JAR): $(JVM_SRC) $(VENV)/.installed
	rm -rf build/target/jvm-$(SPARK) && mkdir -p build/target/jvm-$(SPARK) $(JARS)
	javac --release $(JAVA_RELEASE) -Xlint:all,-path -Werror -encoding UTF-8 \
		-cp "$$($(PY) -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')/*" \
		-d build/target/jvm-$(SPARK) $(JVM_SRC)
	jar cf $@ -C build/target/jvm-$(SPARK) .

test: setup ## the whole suite (starts and stops its own moto server)
	$(PY) -m pytest $(PYTEST_ARGS)

smoke: setup ## the cross-version smoke tests only (use with SPARK=4.0)
	$(PY) -m pytest -m smoke $(PYTEST_ARGS)

# A real Python 3.9 if this machine has one (pyenv's shim may exist without a usable 3.9 behind it).
PY39 := $(firstword $(wildcard $(HOME)/.pyenv/versions/3.9*/bin/python) $(shell python3.9 -c 'import sys; print(sys.executable)' 2>/dev/null))

lint: setup lint-deploy ## ruff targeting Python 3.9 (EMR 7's interpreter), a real 3.9 compile of lib/ and jobs/ if one is here; the deployment's checks
	$(VENV)/bin/ruff check lib jobs tests bench demo standins emr
	@if [ -n "$(PY39)" ]; then $(PY39) -c "import pathlib, sys; [compile(p.read_text(encoding='utf-8'), str(p), 'exec') for d in ('lib', 'jobs') for p in pathlib.Path(d).rglob('*.py')]; print('Python', sys.version.split()[0], 'compiles lib/ and jobs/')"; fi

demo: setup ## the whole DR cycle on loopback: export, outage, restore, verify
	$(PY) demo/run_demo.py

# The deployment: generated files up to date, the CloudFormation template through cfn-lint, every state machine
# through asl-validator (npm, pinned in emr/package.json).
lint-deploy: setup emr-node
	$(PYTHON) emr/build_stepfunctions.py --check
	$(PYTHON) emr/build_stack.py --check
	$(VENV)/bin/cfn-lint emr/ddbvault.json emr/change_sink.json
	emr/node_modules/.bin/asl-validator --silent $(foreach f,$(wildcard emr/stepfunctions/*.asl.json),--json-path $(f))

emr-node: emr/node_modules/.installed

emr/node_modules/.installed: emr/package.json
	cd emr && npm install --no-audit --no-fund --silent
	touch $@

bench-node: bench/node_modules/.installed

bench/node_modules/.installed: bench/package.json
	cd bench && npm install --no-audit --no-fund --silent
	touch $@

BENCH_ITEMS ?= 100000
BENCH_ARGS ?=

bench: setup bench-node ## every contender's wall and CPU per item on dynalite and the wire-speed stand-in (BENCH_ITEMS=, BENCH_ARGS=)
	$(PY) bench/run_all.py --items $(BENCH_ITEMS) $(BENCH_ARGS)

# The artifacts' version: setup.py's, then the commit (and -dirty for uncommitted changes), so an upload never
# replaces another build's files under the same prefix. `make package VERSION=...` overrides it.
DIST ?= dist
VERSION ?= $(shell sed -n 's/^ *version="\([^"]*\)".*/\1/p' setup.py)-$(shell git describe --always --dirty 2>/dev/null || echo nogit)

# pydeps.tar.gz (EMR Serverless's boto3) comes from the venv's site-packages when there is one.
DEPS_PYTHON ?= $(if $(wildcard $(PY)),$(PY),$(PYTHON))

package: $(JVM_JAR) ## dist/<version>/ (DIST=, VERSION= to change): ddbvault.zip (--py-files), ddbvault-jvm.jar (--jars), jobs/, the EMR bootstrap, lambda.zip, pydeps.tar.gz
	rm -rf $(DIST)/$(VERSION) && mkdir -p $(DIST)/$(VERSION)/jobs $(DIST)/$(VERSION)/.lib
	cp $(JVM_JAR) $(DIST)/$(VERSION)/ddbvault-jvm.jar
	cp -R lib/ddbvault $(DIST)/$(VERSION)/.lib/ && find $(DIST)/$(VERSION)/.lib -name __pycache__ -prune -exec rm -rf {} +
	cd $(DIST)/$(VERSION)/.lib && $(PYTHON) -m zipfile -c ../ddbvault.zip ddbvault
	rm -rf $(DIST)/$(VERSION)/.lib
	cp jobs/*.py $(DIST)/$(VERSION)/jobs/ && cp emr/bootstrap.sh $(DIST)/$(VERSION)/
	cp $(DIST)/$(VERSION)/ddbvault.zip $(DIST)/$(VERSION)/lambda.zip
	$(DEPS_PYTHON) emr/package_deps.py $(DIST)/$(VERSION)/pydeps.tar.gz
	@echo "$(DIST)/$(VERSION)/ is ready: aws s3 cp --recursive $(DIST)/$(VERSION)/ s3://ARTIFACTS-BUCKET/artifacts/$(VERSION)/ (the stack's ArtifactsVersion=$(VERSION)), or give the state machines \"artifacts\": \"s3://ARTIFACTS-BUCKET/artifacts/$(VERSION)\""

clean: ## remove venvs, jars and build output
	rm -rf .venv .venv-spark* .jars build/target .demo bench/.out dist emr/node_modules
