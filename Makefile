# The README's two commands: `make verify` runs the suites on the embedded default target, `make test`
# runs the harness's own tests. Both set up what they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# Allure 3 renders the HTML report (`harness report --html`); npm installs it from the lock file into allure3/.
ALLURE_STAMP := allure3/node_modules/.installed-$(shell cat allure3/package-lock.json | cksum | cut -d' ' -f1)
REPORTS := reports

.PHONY: setup verify test localstack-setup system-deps clean

setup: $(STAMP) system-deps $(ALLURE_STAMP)

system-deps:
	scripts/system-deps

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is needed: PYTHON=python3.11 make ..."; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	rm -f $(VENV)/.installed-* && touch $@

# npm ci starts from an empty node_modules, so a stamp of another lock file goes with it.
$(ALLURE_STAMP): allure3/package.json allure3/package-lock.json
	@node -e 'process.exit(Number(process.versions.node.split(".")[0]) < 20 ? 1 : 0)' 2>/dev/null && command -v npm >/dev/null \
	  || { echo "Node.js 20+ with npm is needed for the HTML report (harness report --html): install it, then make setup again"; exit 2; }
	cd allure3 && npm ci --no-audit --no-fund --loglevel=error
	touch $@

verify: setup
	$(BIN)/pytest compliance smoke load dr --alluredir $(REPORTS)/allure-results --clean-alluredir --junitxml $(REPORTS)/junit.xml

localstack-setup:
	scripts/localstack setup

test: setup localstack-setup
	$(BIN)/pytest tests -n 2 --dist loadfile --junitxml $(REPORTS)/self-tests.xml

clean:
	rm -rf $(VENV) .venv-localstack .stand-in $(REPORTS)/allure-results $(REPORTS)/*.xml $(REPORTS)/summary.json
