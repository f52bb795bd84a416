# Two entry points (see README): `make run` runs the study, `make test` runs the tests.
# Both set up ./.venv first; the setup is idempotent and reuses an existing environment.

PYTHON ?= python3
VENV ?= .venv
# CPU wheel for laptops and CI; GPU users: `make setup TORCH_SPEC='torch>=2.4'` (or their CUDA build).
TORCH_SPEC ?= torch==2.13.0
CORES ?= all
SNAKEMAKE_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.sizepenalty-setup

.PHONY: setup run test test-slurm lint clean-results

# Re-runs pip only when the dependency declaration changed (or the venv is new). The lock file
# constrains every runtime dependency to the versions CI and the container use (a fresh resolve
# once picked an older Snakemake whose apptainer handling differs).
$(STAMP): pyproject.toml envs/requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)" > $(VENV)/pip.log 2>&1 \
	  || (grep -v '^WARNING: Location' $(VENV)/pip.log; exit 1)
	@$(BIN)/python -m pip install -q -e ".[test]" -c envs/requirements.lock > $(VENV)/pip.log 2>&1 \
	  || (grep -v '^WARNING: Location' $(VENV)/pip.log; exit 1)
	@$(BIN)/python -c "import torch, monai, sizepenalty; print('sizepenalty', sizepenalty.__version__, '| torch', torch.__version__, '| monai', monai.__version__)"
	@touch $(STAMP)

setup: $(STAMP)

# The venv's bin goes first on PATH: every rule calls the `sizepenalty` command.
run: setup
	PATH="$(abspath $(BIN)):$$PATH" MLFLOW_DISABLE_TELEMETRY=true $(BIN)/snakemake --cores $(CORES) $(SNAKEMAKE_ARGS)

# The SLURM test starts its own single-node cluster: it runs separately (needs munge + slurm-wlm).
test: setup
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python -m pytest -q -m "not slurm"

test-slurm: setup
	MLFLOW_DISABLE_TELEMETRY=true timeout -k 15 900 $(BIN)/python -m pytest -q -m slurm -rs

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/snakefmt --check Snakefile workflow
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --lint
	$(BIN)/hadolint Dockerfile

clean-results:
	rm -rf results .snakemake
