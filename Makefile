# Two commands on a fresh machine:  `make ui` (set up, then chat)  and  `make test` (set up, then test).
# Everything downloaded or built is cached under $(CACHE), so a second run takes seconds.
PYTHON ?= python3.11
CACHE ?= $(HOME)/.cache/arabic-rag
VENV ?= .venv
LLAMA_CPP_VERSION := 0.3.36
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

export RAG_CACHE := $(CACHE)
export PIP_CACHE_DIR := $(CACHE)/pip
BIN := $(VENV)/bin

.PHONY: setup models index ui test lint browser bench

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch first: otherwise sentence-transformers pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	# llama-cpp-python compiles for ~6 minutes: build the wheel once into the cache, reuse it after.
	ls $(CACHE)/wheels/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || \
		$(BIN)/pip wheel -q --no-deps llama-cpp-python==$(LLAMA_CPP_VERSION) -w $(CACHE)/wheels
	$(BIN)/pip install -q --find-links $(CACHE)/wheels llama-cpp-python==$(LLAMA_CPP_VERSION)
	$(BIN)/pip install -q -e '.[llm,ui,server,test]'
	touch $@

setup: $(BIN)/.installed

models: setup
	$(BIN)/rag models pull

index: models
	$(BIN)/rag index

ui: index
	$(BIN)/rag ui

browser:
	@command -v chromium >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium)

lint: setup
	$(BIN)/ruff check rag tests evals

test: index browser lint
	$(BIN)/pytest

bench: index
	$(BIN)/python evals/bench.py
