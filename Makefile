# Two commands do all the set-up on a fresh machine:  `make train`  and  `make test`.
# Each creates .venv from requirements*.txt (once) and fetches the NLTK data the checkers need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rtt-installed

.PHONY: install test train bench clean-venv

$(STAMP): requirements.txt requirements-nodeps.txt support/nltk_assets.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m support.nltk_assets
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

train: $(STAMP)
	$(BIN)/python train.py

clean-venv:
	rm -rf $(VENV)
