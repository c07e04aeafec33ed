# Two commands on a fresh machine:  `make ui` (set up, then chat)  and  `make test` (set up, then test).
# Everything downloaded or built is cached under $(CACHE), so a second run takes seconds.
PYTHON ?= python3.11
CACHE ?= $(HOME)/.cache/arabic-rag
VENV ?= .venv
LLAMA_CPP_VERSION := 0.3.36
# llama.cpp is compiled for this machine's CPU (-march=native) less its AMX instructions: on Intel CPUs with AMX,
# ggml's AMX kernels segfault on our Q4_K_M models (ggml-org/llama.cpp#20824, closed unfixed), while the AVX2 /
# AVX-512 weight repacking is kept (README, "The llama.cpp build"). GGML_NATIVE would put -march=native after our
# -mno-amx-*, so it is off, and so are ggml's own x86 switches: the compiler's native detection decides them all.
ifeq ($(shell uname -m),x86_64)
LLAMA_CFLAGS ?= -march=native -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
LLAMA_CMAKE ?= -DGGML_NATIVE=OFF -DGGML_SSE42=OFF -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF \
	-DGGML_BMI2=OFF
endif
# More CMake options for llama.cpp, e.g. `make setup LLAMA_EXTRA=-DGGML_CUDA=on` for CUDA offload.
LLAMA_EXTRA ?=
# One cached wheel per recipe and CPU: a wheel built with other flags, or for another CPU, is never reused.
LLAMA_KEY := $(shell { echo $(LLAMA_CPP_VERSION) $(LLAMA_CFLAGS) $(LLAMA_CMAKE) $(LLAMA_EXTRA); uname -m; \
	grep -m1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null; } | sha256sum | cut -c1-12)
LLAMA_WHEELS := $(CACHE)/wheels/llama-cpp-$(LLAMA_KEY)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

export RAG_CACHE := $(CACHE)
export PIP_CACHE_DIR := $(CACHE)/pip
BIN := $(VENV)/bin

# A private PostgreSQL 15 with pgvector for the pgvector store's tests (`make pg`, `make pg-stop`).
PG_VERSION := 15
PG_PORT ?= 54329
PG_BIN := /usr/lib/postgresql/$(PG_VERSION)/bin
# Postgres refuses to run as root: as root it runs as the postgres user, in that user's home (root's is private).
PG_DIR ?= $(if $(SUDO),$(CACHE)/pg,/var/lib/postgresql/arabic-rag)
PG_AS := $(if $(SUDO),,runuser -u postgres --)
PG_DSN := postgresql://rag:rag@127.0.0.1:$(PG_PORT)/rag
PSQL := $(PG_AS) $(PG_BIN)/psql -h $(PG_DIR)/run -p $(PG_PORT) -U postgres -v ON_ERROR_STOP=1 -qtA
PGVECTOR := $(CACHE)/pgvector
# bookworm has no pgvector >= 0.5 (HNSW): Debian's source package from trixie, fetched with a private apt list from
# the Debian archive this machine's apt already uses (its mirror, its proxy settings).
APT_PGVECTOR := -o Dir::Etc::SourceList=$(PGVECTOR)/sources.list -o Dir::Etc::SourceParts=/dev/null \
	-o Dir::State::Lists=$(PGVECTOR)/lists -o Dir::Cache=$(PGVECTOR)/apt -o APT::Sandbox::User=$(shell id -un)
# Built against the server headers of postgresql-server-dev (unpacked, not installed: it pulls in clang and LLVM),
# without -march=native so that the cached build runs on any x86-64.
PGVECTOR_MAKE := -C $(PGVECTOR)/src PG_CONFIG=$(PG_BIN)/pg_config OPTFLAGS="" with_llvm=no \
	includedir_server=$(PGVECTOR)/dev/usr/include/postgresql/$(PG_VERSION)/server

.PHONY: setup models index ui test lint browser bench pg pg-stop

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch first: otherwise sentence-transformers pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	# llama-cpp-python compiles for ~6 minutes: build the wheel once into the cache, reuse it after. --no-cache-dir:
	# pip's own wheel cache ignores CMAKE_ARGS and would hand back a wheel built with other flags.
	ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || \
		CFLAGS="$(LLAMA_CFLAGS)" CXXFLAGS="$(LLAMA_CFLAGS)" CMAKE_ARGS="$(LLAMA_CMAKE) $(LLAMA_EXTRA)" \
		$(BIN)/pip wheel -q --no-cache-dir --no-deps llama-cpp-python==$(LLAMA_CPP_VERSION) -w $(LLAMA_WHEELS)
	$(BIN)/pip install -q --force-reinstall --no-deps $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(BIN)/pip install -q -e '.[llm,ui,server,test,pg,fast,train]'
	touch $@

setup: $(BIN)/.installed

models: setup
	$(BIN)/rag models pull

index: models
	$(BIN)/rag index

ui: index
	$(BIN)/rag ui

# Chromium for the browser tests and for printing Arabic PDFs in the format tests; fonts with Arabic glyphs.
browser:
	@command -v chromium >/dev/null && [ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || \
		($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium fonts-dejavu-core fonts-noto-core)

lint: setup
	$(BIN)/ruff check rag tests evals
	$(BIN)/lint-imports --no-cache

# The pgvector tests run against `make pg`'s server, which is stopped afterwards whatever the tests did.
test: index browser lint pg
	RAG_TEST_PG_DSN=$(PG_DSN) $(BIN)/pytest; status=$$?; $(MAKE) --no-print-directory pg-stop; exit $$status

bench: index
	$(BIN)/python evals/bench.py

$(PG_BIN)/initdb:
	$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq postgresql-$(PG_VERSION)

$(PGVECTOR)/.built: | $(PG_BIN)/initdb
	rm -rf $(PGVECTOR) && mkdir -p $(PGVECTOR)/lists/partial $(PGVECTOR)/apt/archives/partial
	$(SUDO) apt-get update -qq
	mirror=$$(apt-get indextargets --format '$$(SITE) $$(LABEL)' | awk '$$2 == "Debian" { print $$1; exit }'); \
	test -n "$$mirror" || { echo "error: apt has no Debian archive configured: pgvector's source comes from it" >&2; \
		exit 2; }; \
	echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $$mirror trixie main" \
		> $(PGVECTOR)/sources.list
	cd $(PGVECTOR) && apt-get -qq $(APT_PGVECTOR) update && apt-get -qq $(APT_PGVECTOR) source --download-only pgvector \
		&& apt-get -qq -o APT::Sandbox::User=$(shell id -un) download postgresql-server-dev-$(PG_VERSION)
	cd $(PGVECTOR) && mkdir src && tar xzf pgvector_*.orig.tar.gz -C src --strip-components 1 && dpkg-deb -x postgresql-server-dev-*.deb dev && rm -rf lists apt
	$(MAKE) -s $(PGVECTOR_MAKE)
	touch $@

pg: $(PG_BIN)/initdb $(PGVECTOR)/.built
	test -f /usr/share/postgresql/$(PG_VERSION)/extension/vector.control || $(SUDO) $(MAKE) -s $(PGVECTOR_MAKE) install
	test -f $(PG_DIR)/data/PG_VERSION || { \
		mkdir -p $(PG_DIR)/run && $(if $(SUDO),true,chown -R postgres:postgres $(PG_DIR)) && \
		$(PG_AS) $(PG_BIN)/initdb -D $(PG_DIR)/data -U postgres -E UTF8 --locale=C.UTF-8 --auth-local=trust \
			--auth-host=scram-sha-256 >/dev/null && \
		printf "listen_addresses = '127.0.0.1'\nport = $(PG_PORT)\nunix_socket_directories = '$(PG_DIR)/run'\n" \
			>> $(PG_DIR)/data/postgresql.conf; }
	$(PG_AS) $(PG_BIN)/pg_ctl -D $(PG_DIR)/data status >/dev/null || \
		$(PG_AS) $(PG_BIN)/pg_ctl -D $(PG_DIR)/data -l $(PG_DIR)/server.log -w start >/dev/null
	$(PSQL) -c "SELECT 1 FROM pg_roles WHERE rolname = 'rag'" | grep -q 1 || \
		$(PSQL) -c "CREATE ROLE rag LOGIN CREATEDB PASSWORD 'rag'"
	$(PSQL) -c "SELECT 1 FROM pg_database WHERE datname = 'rag'" | grep -q 1 || $(PSQL) -c "CREATE DATABASE rag OWNER rag"
	$(PSQL) -d rag -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS vector"
	@echo "PostgreSQL $(PG_VERSION) with pgvector $$($(PSQL) -d rag -c "SELECT extversion FROM pg_extension WHERE \
	extname = 'vector'") is running on 127.0.0.1:$(PG_PORT): RAG_PG_DSN=$(PG_DSN)"

pg-stop:
	! $(PG_AS) $(PG_BIN)/pg_ctl -D $(PG_DIR)/data status >/dev/null 2>&1 || \
		$(PG_AS) $(PG_BIN)/pg_ctl -D $(PG_DIR)/data -m fast -w stop >/dev/null
