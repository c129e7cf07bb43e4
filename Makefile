# The two commands of the README:
#   make run    the main job: every notebook, cpu profile, into runs/cpu (report.md, results.csv)
#   make test   the tests: unit tests + a papermill smoke run of every notebook (what CI runs)
VENV    ?= .venv
PY      := $(VENV)/bin/python
PROFILE ?= cpu
OUT     ?= runs/$(PROFILE)
ONLY    ?=
ARGS    ?=

.PHONY: install run smoke test clean
install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml constraints.txt scripts/install.sh
	bash scripts/install.sh $(VENV)
	touch $@

run: install
	$(PY) -m helpers.workbook run --profile $(PROFILE) --out $(OUT) $(if $(ONLY),--only $(ONLY)) $(ARGS)

smoke: install
	$(PY) -m helpers.workbook run --profile cpu --smoke --out runs/smoke $(if $(ONLY),--only $(ONLY))

test: install
	$(PY) -m pytest $(ARGS)

clean:
	rm -rf runs .pytest_cache .hypothesis
