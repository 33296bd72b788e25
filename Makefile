# Two commands on a fresh machine with only Python and pip:
#   make reproduce   install into .venv, then run the main job (smoke profile, phantom data)
#   make test        install into .venv, then run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.uadlab-installed

.PHONY: install reproduce test test-browser lab benchmarks clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -c constraints.txt -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

reproduce: $(STAMP)
	$(BIN)/uadlab reproduce --profile smoke --data phantom --out results

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup --durations=20

# Every lab (00-08, smoke profile) in headless Chromium, as a student runs it: Run All, figures, explorers,
# no console error, reopened after its kernel is gone. About 10-15 min; CI runs it after `make test`.
test-browser: $(STAMP)
	UADLAB_BROWSER_NOTEBOOKS=all $(BIN)/python -m pytest -p no:cacheprovider tests/integration/test_browser.py

# As root (containers, CI machines) JupyterLab refuses to start without --allow-root: added then.
# notebooks/.jupyter sets JupyterLab to save the explorers' widget state with a lab, so that a lab opened
# again after its kernel is gone shows their last pictures, not "Error displaying widget: model not found".
lab: $(STAMP)
	JUPYTER_CONFIG_PATH=$(CURDIR)/notebooks/.jupyter$(if $(JUPYTER_CONFIG_PATH),:$(JUPYTER_CONFIG_PATH)) \
		$(BIN)/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/train_epoch.py
	$(BIN)/python benchmarks/metrics.py
	$(BIN)/python benchmarks/data_build.py
	$(BIN)/python benchmarks/reconstruction.py

clean:
	rm -rf $(VENV) results .pytest_cache
