#!/bin/bash
# The device checks of issue 18 as one script for a lent GPU machine (the `device` tool).
#   here:  scripts/gpu_checks.sh prepare    # wheels the device image lacks -> .whl/ (git-ignored)
#   there: run(command="scripts/gpu_checks.sh run", carry=[".whl"], timeout_s=600)
# `run` uses the image's python3 (its CUDA torch, transformers, safetensors, pytest) with this checkout on
# PYTHONPATH, installs the carried wheels, tries xformers, runs the CUDA tests, then the real-trainer benchmark;
# logs and benchmarks' JSON land in $OUT.
set -u
case "${1:-}" in
prepare)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d .whl diffusers webdataset braceexpand pycocoevalcap ;;
run)
  out=${OUT:-gpu-out}; mkdir -p "$out"
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl > "$out/wheels.log" 2>&1
  export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
  nvidia-smi > "$out/nvidia-smi.txt" 2>&1
  python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py > "$out/cuda_tests.log" 2>&1; tail -3 "$out/cuda_tests.log"
  python3 -m benchmarks.gpu_train "$out" > "$out/gpu_train.log" 2>&1; tail -6 "$out/gpu_train.log" ;;
*) echo "usage: scripts/gpu_checks.sh prepare|run" >&2; exit 2 ;;
esac
