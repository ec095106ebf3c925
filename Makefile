# One command per developer task, the same locally and in CI.
PY ?= .venv/bin/python

.PHONY: test bench docs schemas
test:
	$(PY) -m pytest -q

bench:
	$(PY) bench/bench_static.py
	$(PY) bench/bench_assess.py
	@if [ -f bench/bench_nnc.py ]; then $(PY) bench/bench_nnc.py; fi

docs:
	$(PY) scripts/gen_docs.py

schemas:
	$(PY) -m eeki_label.schema_gen
