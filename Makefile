# The two commands: `make run` serves the API on a laptop, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)

STAGE ?= dev

.PHONY: run test venv clean deploy package admin

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m devstack.run

# The operator command against the running `make run` (or STAGE=...): make admin ARGS="find a@b.c"
admin: $(STAMP)
	$(PY) -m chalicelib.admin $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# Deploy one stage to AWS (infrastructure stack, chalice deploy, gateway responses, URLs).
deploy: $(STAMP)
	$(PY) -m infra deploy --stage $(STAGE)

# The same stage as CloudFormation/SAM artefacts in build/$(STAGE)/, for a pipeline.
package: $(STAMP)
	$(PY) -m infra package --stage $(STAGE)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
