# Two entry points (see README): `make run` runs the study, `make test` runs the tests.
# Both set up ./.venv first; the setup is idempotent and reuses an existing environment.

PYTHON ?= python3
VENV ?= .venv
# The one PyTorch pin (lock, CI, image) is the lock's torch==X line. pip picks the build: PyPI's
# Linux wheel bundles CUDA; CI's pip configuration finds the CPU wheel first. Another CUDA build of
# the same version: install it into $(VENV) first (e.g. from download.pytorch.org/whl/cu126).
TORCH_SPEC ?= $(shell sed -n 's/^\(torch==[^ ]*\)$$/\1/p' envs/requirements.lock)
CORES ?= all
SNAKEMAKE_ARGS ?=
# The study's console (src/sizepenalty/console.py): a progress line, failed jobs' errors, the
# report's path. `make run CONSOLE=` gives Snakemake's own; its full log is in .snakemake/log/.
CONSOLE ?= --logger sizepenalty

BIN := $(VENV)/bin
STAMP := $(VENV)/.sizepenalty-setup

.PHONY: setup run test test-slurm image test-container lint clean-results print-%

# Re-runs pip only when the dependency declaration changed (or the venv is new). Everything: the
# core, the study and synthetic-cohort extras and the test tools (`.[dev]`, pyproject.toml). The lock file
# constrains every runtime dependency to the versions CI and the container use (a fresh resolve
# once picked an older Snakemake whose apptainer handling differs).
$(STAMP): pyproject.toml envs/requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)" > $(VENV)/pip.log 2>&1 \
	  || (grep -v '^WARNING: Location' $(VENV)/pip.log; exit 1)
	@$(BIN)/python -m pip install -q -e ".[dev]" -c envs/requirements.lock > $(VENV)/pip.log 2>&1 \
	  || (grep -v '^WARNING: Location' $(VENV)/pip.log; exit 1)
	@$(BIN)/python -c "import torch, monai, sizepenalty; print('sizepenalty', sizepenalty.__version__, '| torch', torch.__version__, '| monai', monai.__version__)"
	@touch $(STAMP)

setup: $(STAMP)

# The venv's bin goes first on PATH: every rule calls the `sizepenalty` command. A lock left by a
# killed run is cleared first when no process of that run is left (sizepenalty.locks says what it
# does), and --rerun-incomplete reruns the killed jobs (a training resumes from its checkpoint).
run: setup
	@PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m sizepenalty.locks $(SNAKEMAKE_ARGS)
	PATH="$(abspath $(BIN)):$$PATH" MLFLOW_DISABLE_TELEMETRY=true $(BIN)/snakemake --cores $(CORES) --rerun-incomplete $(CONSOLE) $(SNAKEMAKE_ARGS)

# The SLURM test starts its own single-node cluster and the container test builds the image: each
# runs separately (needs munge + slurm-wlm; podman, runc, mmdebstrap, uidmap).
test: setup
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python -m pytest -q -m "not slurm and not container"

test-slurm: setup
	MLFLOW_DISABLE_TELEMETRY=true timeout -k 15 900 $(BIN)/python -m pytest -q -m slurm -rs

# The image from the Dockerfile with podman (CPU torch, base bootstrapped from Debian packages),
# then `sizepenalty --version` and a tiny study through --use-singularity inside it (.ci/podman/).
# (CONTAINERS_CONF: runc, no ulimits; overlay storage also rootless. Your own settings win.)
PODMAN_ENV := CONTAINERS_CONF="$${CONTAINERS_CONF:-$(abspath .ci/podman/containers.conf)}" \
	STORAGE_DRIVER="$${STORAGE_DRIVER:-overlay}"
image: setup
	$(PODMAN_ENV) $(BIN)/python .ci/podman/build_image.py

test-container: image
	$(PODMAN_ENV) MLFLOW_DISABLE_TELEMETRY=true timeout -k 15 1200 $(BIN)/python -m pytest -q -m container -rs

print-%:
	@echo '$($*)'

lint: setup
	$(BIN)/ruff check src tests bench envs .ci/podman/build_image.py .ci/podman/apptainer
	$(BIN)/snakefmt --check Snakefile workflow
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --lint
	$(BIN)/hadolint Dockerfile

clean-results:
	rm -rf results .snakemake
