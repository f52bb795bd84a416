# sizepenalty: the study's CUDA image. Every Snakemake rule runs in it under --use-singularity.
# Build:  docker build -t ghcr.io/sizepenalty/sizepenalty:0.1.0 .
# The tag follows the package version (src/sizepenalty/__init__.py) and config.yaml's container.image.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="sizepenalty" \
      org.opencontainers.image.description="Size Penalty Loss study: Snakemake DAG, MONAI training, MLflow tracking" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    MPLBACKEND=Agg

WORKDIR /opt/sizepenalty

# Dependencies first (exact versions, torch from the base image): this layer is rebuilt only when
# the lock changes, not on every source edit.
COPY envs/requirements.lock envs/requirements.lock
RUN pip install --no-cache-dir -r envs/requirements.lock

# Then the package itself (the schema lives in workflow/schemas and is linked into the package).
COPY pyproject.toml README.md LICENSE ./
COPY workflow/schemas workflow/schemas
COPY src src
RUN pip install --no-cache-dir --no-deps . \
    && sizepenalty --version

# Snakemake's apptainer runs as the calling user; under Docker, do not run as root either.
RUN groupadd --gid 10001 sizepenalty \
    && useradd --create-home --uid 10001 --gid 10001 --shell /bin/bash sizepenalty
USER 10001:10001
WORKDIR /work

CMD ["sizepenalty", "--help"]
