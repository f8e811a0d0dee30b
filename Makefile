# Two targets do all the set-up from a fresh clone (only Python 3.11+ and pip needed):
#   make up    create .venv if missing, install, start the local stack (Ctrl-C stops it)
#   make test  create .venv if missing, install with test extras, run ruff, import-linter
#              (the layering), mypy and pytest
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
APT := $(if $(filter 0,$(shell id -u)),apt-get,sudo -n apt-get)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: up test lint bench clean prometheus-tools

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-up: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[gpu,local,bench,gateway,batch]'
	touch $@

# The lowest supported transformers (with the huggingface-hub it needs), in a folder of
# its own that one test puts first on the path: the decode loop's tests run there too.
TRANSFORMERS_LOWER := transformers==5.17.0 huggingface-hub==1.33.0

$(VENV)/.installed-test: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	PIP_CONSTRAINT= $(BIN)/python -m pip install -q --no-deps --upgrade \
		--target $(VENV)/transformers-lower $(TRANSFORMERS_LOWER)
	touch $@ $(VENV)/.installed-up

up: $(VENV)/.installed-up
	$(BIN)/switchyard up $(ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check broker dispatcher workers ops src tests
	$(BIN)/lint-imports
	$(BIN)/mypy

# The real Prometheus tools the monitoring tests run (prometheus, promtool): Debian's
# package, installed where missing. Under CI=true a failed install fails the target.
prometheus-tools:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || \
	  { $(APT) install -y -q --no-install-recommends prometheus >/dev/null 2>&1 || \
	    { $(APT) update -q >/dev/null 2>&1 && \
	      $(APT) install -y -q --no-install-recommends prometheus >/dev/null 2>&1; }; } || \
	  { if [ "$$CI" = "true" ]; then echo "could not install prometheus (apt-get)"; exit 1; \
	    else echo "warning: prometheus/promtool missing: their tests will be skipped"; fi; }

test: lint prometheus-tools
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed-up
	$(BIN)/switchyard bench queue
	$(BIN)/switchyard bench embed

clean:
	rm -rf $(VENV) .switchyard .mypy_cache .ruff_cache .pytest_cache
