# The README's two commands: `make verify` runs the suites on the embedded default target, `make test`
# runs the harness's own tests. Both set up what they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# uv installs the Python dependencies exactly as uv.lock pins them (and removes anything it does not pin);
# uv itself is pinned in the same lock and installed into a venv of its own.
UV_VENV := .venv-uv
UV := $(UV_VENV)/bin/uv
PYTHON_PATH = $(shell $(PYTHON) -c 'import sys; print(sys.executable)')
STAMP := $(VENV)/.installed-$(shell { echo "$(PYTHON)"; cat pyproject.toml uv.lock; } | cksum | cut -d' ' -f1)
# Allure 3 renders the HTML report (`harness report --html`); npm installs it from the lock file into allure3/.
ALLURE_STAMP := allure3/node_modules/.installed-$(shell cat allure3/package-lock.json | cksum | cut -d' ' -f1)
REPORTS := reports

.PHONY: setup venv verify test test-unit lock lock-upgrade localstack-setup system-deps clean

setup: $(STAMP) system-deps $(ALLURE_STAMP)

# The Python environment alone, for the workflows that run on AWS and need none of the stand-in's servers.
venv: $(STAMP)

system-deps:
	scripts/system-deps

$(UV): uv.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is needed: PYTHON=python3.11 make ..."; exit 2; }
	$(PYTHON) -m venv --clear $(UV_VENV)
	$(PYTHON) scripts/locked-requirement uv > $(UV_VENV)/requirement.txt
	$(UV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
	  --only-binary :all: -r $(UV_VENV)/requirement.txt
	touch $@

# --compile-bytecode: every process the harness starts (the smoke gate, the stand-in's servers, Locust) reads
# its libraries' bytecode instead of compiling them again, whatever PYTHONDONTWRITEBYTECODE says. LocalStack's
# venv is left as it is: compiling all of it took 18 CPU-s here, for a server the self-tests start once.
$(STAMP): pyproject.toml uv.lock $(UV)
	$(UV) sync --quiet --locked --compile-bytecode --python "$(PYTHON_PATH)"
	rm -f $(VENV)/.installed-* && touch $@

# Re-resolve uv.lock and localstack/uv.lock after a change of pyproject.toml, keeping every other pin;
# lock-upgrade moves every pin to the newest version the ranges allow (the weekly re-lock workflow).
lock: $(UV)
	$(UV) lock --python "$(PYTHON_PATH)"
	$(UV) lock --project localstack --python "$$(scripts/localstack python)"

lock-upgrade: $(UV)
	$(UV) lock --upgrade --python "$(PYTHON_PATH)"
	$(UV) lock --upgrade --project localstack --python "$$(scripts/localstack python)"

# npm ci starts from an empty node_modules, so a stamp of another lock file goes with it.
$(ALLURE_STAMP): allure3/package.json allure3/package-lock.json
	@node -e 'process.exit(Number(process.versions.node.split(".")[0]) < 20 ? 1 : 0)' 2>/dev/null && command -v npm >/dev/null \
	  || { echo "Node.js 20+ with npm is needed for the HTML report (harness report --html): install it, then make setup again"; exit 2; }
	cd allure3 && npm ci --no-audit --no-fund --loglevel=error
	touch $@

verify: setup
	$(BIN)/pytest compliance smoke load dr --alluredir $(REPORTS)/allure-results --clean-alluredir --junitxml $(REPORTS)/junit.xml

localstack-setup: $(UV)
	scripts/localstack setup

# Four workers, each handed whole files, the slowest first (tests/conftest.py); the tests wait on servers much
# of the time. The self-tests start some 500 Python processes: with PYTHONDONTWRITEBYTECODE set, each would
# compile the harness's modules (and pytest rewrite them) anew; __pycache__ is ignored by git.
test: setup localstack-setup
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest tests -n 4 --dist loadfile --no-loadscope-reorder \
	  --junitxml $(REPORTS)/self-tests.xml

# The unit tier alone (pure, in-process): seconds, no server started, nothing to install but the venv.
test-unit: venv
	$(BIN)/pytest tests/unit -q

clean:
	rm -rf $(VENV) $(UV_VENV) .venv-localstack .stand-in $(REPORTS)/allure-results $(REPORTS)/*.xml $(REPORTS)/summary.json
