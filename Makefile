# The README's commands, plus the tools a course author needs. `make help` lists them.
PY ?= python

.PHONY: help install train test unit notebooks exercises lint bench
help:
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
install: ## install minidetr with its test tools into the active environment
	$(PY) -m pip install -e ".[test]"
train: ## train the default CPU preset on the synthetic dataset and print COCO AP
	$(PY) -m minidetr.train
test: ## the whole suite: unit tests, lessons and solutions (nbval)
	$(PY) -m pytest
unit: ## unit tests only (fast)
	$(PY) -m pytest tests -p no:nbval -o addopts=""
notebooks: ## re-execute lessons and solutions in place, then regenerate exercises
	for nb in notebooks/*.ipynb solutions/*.ipynb; do $(PY) -m jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=900 $$nb || exit 1; done
	$(PY) -m minidetr.course exercises
exercises: ## regenerate exercises/ from solutions/
	$(PY) -m minidetr.course exercises
lint: ## ruff lint and format check
	$(PY) -m ruff check minidetr tests benchmarks && $(PY) -m ruff format --check minidetr tests benchmarks
bench: ## time the default preset and record it in benchmarks/RESULTS.md
	$(PY) benchmarks/bench_default_preset.py
