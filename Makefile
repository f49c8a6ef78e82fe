# The two commands: `make run` serves the API on a laptop, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.lock requirements-dev.lock | cksum | cut -d' ' -f1)
# Locks: requirements.txt / requirements-dev.txt are the pins people edit; `make lock` turns
# them into requirements.lock / requirements-dev.lock (every transitive dependency, with
# hashes), which are what gets installed here and packaged into the Lambda.
PIP_COMPILE = PIP_FIND_LINKS= PIP_CONFIG_FILE=/dev/null $(VENV)/bin/pip-compile --quiet --generate-hashes \
	--allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links

STAGE ?= dev

.PHONY: run test lint venv clean deploy package admin reset walkthrough rollback lock lock-check

$(STAMP): requirements.lock requirements-dev.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.lock
	rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m devstack.run

# Wipe what `make run` keeps between runs (.local/: the embedded AWS's data, the local JWT secret).
reset: $(STAMP)
	$(PY) -m devstack.local_data reset

# Every step a user takes, against the running `make run` (docs/sandbox.md).
walkthrough: $(STAMP)
	$(PY) scripts/walkthrough.py $(ARGS)

# The operator command against the running `make run` (or STAGE=...):
#   make admin EMAIL=you@example.com    make that account an admin
#   make admin ARGS="find a@b.c"        any other command (docs/console.md)
admin: $(STAMP)
	$(PY) -m chalicelib.ops.admin $(if $(EMAIL),grant-admin $(EMAIL),$(or $(ARGS),--help))

# The whole suite on both cores, then the browser tests alone (one Chromium, no neighbour
# competing for the CPU while a page waits). PYTEST_ARGS (flags) applies to both runs;
# TESTS=tests/unit runs only those paths, on both cores.
test: $(STAMP)
ifeq ($(TESTS),)
	$(PY) -m pytest -n 2 --ignore=tests/browser $(PYTEST_ARGS)
	$(PY) -m pytest tests/browser $(PYTEST_ARGS)
else
	$(PY) -m pytest -n 2 $(PYTEST_ARGS) $(TESTS)
endif

# Deploy one stage to AWS (infrastructure stack, chalice deploy, gateway responses, URLs).
deploy: $(STAMP)
	$(PY) -m infra deploy --stage $(STAGE)

# Redeploy the app code of a git ref (tag, commit) to a stage, with the stage's saved deploy state.
rollback: $(STAMP)
	test -n "$(REF)" || (echo "usage: make rollback STAGE=dev REF=<git tag or commit>" && exit 2)
	$(PY) -m infra rollback --stage $(STAGE) --ref $(REF)

# The same stage as CloudFormation/SAM artefacts in build/$(STAGE)/, for a pipeline.
package: $(STAMP)
	$(PY) -m infra package --stage $(STAGE)

# Regenerate the locks after editing requirements*.txt (needs PyPI), then check them.
lock: $(STAMP)
	$(PIP_COMPILE) --output-file requirements.lock requirements.txt
	$(PIP_COMPILE) --output-file requirements-dev.lock requirements-dev.txt
	$(PY) -m pytest -q tests/deploy/test_locks.py

# Fails when the locks are not what `make lock` would write today from requirements*.txt.
lock-check: $(STAMP)
	$(PIP_COMPILE) --no-upgrade --output-file requirements.lock requirements.txt
	$(PIP_COMPILE) --no-upgrade --output-file requirements-dev.lock requirements-dev.txt
	git diff --exit-code requirements.lock requirements-dev.lock
	$(PY) -m pytest -q tests/deploy/test_locks.py

# ruff and mypy --strict as configured in pyproject.toml.
lint: $(STAMP)
	$(VENV)/bin/ruff check app.py chalicelib devstack infra scripts tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
