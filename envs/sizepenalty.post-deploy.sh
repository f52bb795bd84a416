#!/usr/bin/env bash
# Run by Snakemake (--use-conda) right after creating envs/sizepenalty.yaml: install this checkout
# of the package into the environment (its dependencies come from the YAML, hence --no-deps).
set -euo pipefail
python -m pip install --no-deps --no-build-isolation "${SIZEPENALTY_SRC:-.}" \
  || python -m pip install --no-deps "${SIZEPENALTY_SRC:-.}"
