# sizepenalty: the study's image. Every Snakemake rule runs in it under --use-singularity.
# Build:  docker build -t ghcr.io/sizepenalty/sizepenalty:0.1.0 .     (or podman build)
# The tag follows the package version (src/sizepenalty/__init__.py) and config.yaml's container.image.
#
# PyTorch is the lock's pin (envs/requirements.lock: torch==X, the version `make setup` and CI
# test). By default it is PyPI's Linux wheel, a CUDA build that bundles its CUDA libraries (the
# host needs only an NVIDIA driver recent enough for that CUDA). Build arguments:
#   TORCH_VARIANT=cpu   the CPU wheel, from TORCH_CPU_INDEX (empty: the pip configuration's sources)
#   BASE=IMAGE          another Debian bookworm base with python3 + venv (CI bootstraps one from
#                       Debian packages: no registry there; see .ci/podman/build_image.py)
# The build fails if the installed torch is not the pinned version and variant (envs/check_torch.py).
ARG BASE=docker.io/library/python:3.11-slim-bookworm
FROM ${BASE}

ARG VERSION=0.1.0
ARG TORCH_VARIANT=cuda
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
LABEL org.opencontainers.image.title="sizepenalty" \
      org.opencontainers.image.description="Size Penalty Loss study: Snakemake DAG, MONAI training, MLflow tracking" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.github.sizepenalty.torch-variant="${TORCH_VARIANT}"

# A virtual environment: the same layout on python:3.11-slim and on Debian's own python3.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    MPLBACKEND=Agg
RUN python3 -m venv /opt/venv

WORKDIR /opt/sizepenalty

# Dependencies first (exact versions, torch included): this layer is rebuilt only when the lock
# changes, not on every source edit. The lock is the closure of the core and of the [all] extra
# (study + synthetic cohort; envs/lock.py): the image has everything a study run needs.
COPY envs/requirements.lock envs/check_torch.py envs/
RUN set -eu; \
    case "${TORCH_VARIANT}" in \
      cuda) pip install --no-cache-dir -r envs/requirements.lock ;; \
      cpu) pip install --no-cache-dir ${TORCH_CPU_INDEX:+--extra-index-url "${TORCH_CPU_INDEX}"} \
             -r envs/requirements.lock "$(grep -E '^torch==' envs/requirements.lock)+cpu" ;; \
      *) echo "TORCH_VARIANT must be cuda or cpu, not '${TORCH_VARIANT}'" >&2; exit 1 ;; \
    esac; \
    python envs/check_torch.py --variant "${TORCH_VARIANT}"

# Then the package itself (the schema lives in workflow/schemas and is linked into the package).
COPY pyproject.toml README.md LICENSE ./
COPY workflow/schemas workflow/schemas
COPY src src
RUN pip install --no-cache-dir --no-deps . \
    && python envs/check_torch.py --variant "${TORCH_VARIANT}" \
    && sizepenalty --version

# Snakemake's apptainer runs as the calling user; under Docker, do not run as root either.
RUN groupadd --gid 10001 sizepenalty \
    && useradd --create-home --uid 10001 --gid 10001 --shell /bin/bash sizepenalty
USER 10001:10001
WORKDIR /work

CMD ["sizepenalty", "--help"]
