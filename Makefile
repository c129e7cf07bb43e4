# The two commands of the README:
#   make run    the main job: every notebook, cpu profile, into runs/cpu (report.md, results.csv)
#   make test   the tests: unit tests + a papermill smoke run of every notebook (what CI runs)
#   make seeds  the long job: every stage with three seeds, every loss of notebook 02, into runs/cpu-seeds
VENV    ?= .venv
PY      := $(VENV)/bin/python
PROFILE ?= cpu
OUT     ?= runs/$(PROFILE)
ONLY    ?=
ARGS    ?=

# what `make seeds` adds to the cpu defaults: three SFT seeds (and their soup), all five distillation losses
# and the two gold arms at three seeds each, three GRPO seeds per reward, both translation rewards
SEED_PARAMS := --param 'TEACHER_SEEDS=[0,1,2]' --param 'STUDENT_SEEDS=[0,1,2]' --param 'SEEDS=[0,1,2]' \
	--param 'LOSSES=["ckd","topk_fkl","fkl","topk_rkl","sft"]' --param 'GOLD_LOSSES=["ckd","sft"]' \
	--param 'GRPO_REWARDS=["bleu","chrf"]'

.PHONY: install run seeds smoke test clean
install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml constraints.txt scripts/install.sh
	bash scripts/install.sh $(VENV)
	touch $@

run: install
	$(PY) -m helpers.workbook run --profile $(PROFILE) --out $(OUT) $(if $(ONLY),--only $(ONLY)) $(ARGS)

seeds: install
	$(PY) -m helpers.workbook run --profile cpu --out runs/cpu-seeds $(SEED_PARAMS) $(if $(ONLY),--only $(ONLY)) $(ARGS)

smoke: install
	$(PY) -m helpers.workbook run --profile cpu --smoke --out runs/smoke $(if $(ONLY),--only $(ONLY))

test: install
	$(PY) -m pytest $(ARGS)

clean:
	rm -rf runs .pytest_cache .hypothesis
