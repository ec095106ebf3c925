# One command per developer task, the same locally and in CI.
PY ?= .venv/bin/python

.PHONY: test bench docs schemas fuzz fuzz-atheris
test:
	$(PY) -m pytest -q

bench:
	$(PY) bench/bench_static.py
	$(PY) bench/bench_assess.py
	@if [ -f bench/bench_nnc.py ]; then $(PY) bench/bench_nnc.py; fi
	$(PY) bench/bench_transfer_speed.py
	$(PY) bench/bench_delta.py
	$(PY) bench/bench_decoder.py
	$(PY) bench/bench_measured.py
	$(PY) bench/bench_batch.py

docs:
	$(PY) scripts/gen_docs.py

schemas:
	$(PY) -m eeki_label.schema_gen

# Long structure-aware fuzz of the loader and static stages (tests/adversarial/test_adv_fuzz.py).
# FUZZ_EXAMPLES examples with random seeds; failures are kept in .hypothesis/ and the example being
# checked in $(FUZZ_DIR)/last.onnx (a hang or crash: reproduce it from there). FUZZ_RUNTIME=1 also
# runs the runtime profile on one example in ten.
FUZZ_EXAMPLES ?= 20000
FUZZ_DIR ?= .fuzz
FUZZ_MEMORY_KB ?= 8000000
fuzz:
	ulimit -v $(FUZZ_MEMORY_KB); HYPOTHESIS_PROFILE=eeki-fuzz-long FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_DIR=$(FUZZ_DIR) \
		$(PY) -m pytest -q -x tests/adversarial/test_adv_fuzz.py -k mutated --hypothesis-show-statistics

# Coverage-guided fuzzing with atheris (optional: pip install atheris), FUZZ_SECONDS long.
FUZZ_SECONDS ?= 600
fuzz-atheris:
	ulimit -v $(FUZZ_MEMORY_KB); $(PY) tests/adversarial/fuzz_atheris.py $(FUZZ_DIR)/corpus -max_total_time=$(FUZZ_SECONDS) -timeout=120 \
		-rss_limit_mb=4096 -artifact_prefix=$(FUZZ_DIR)/
