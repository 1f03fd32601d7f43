#!/usr/bin/env bash
# The GPU checks, in one call on a lent CUDA machine: the test suite's gpu tests and the GPU benchmark.
# Results go to $OUT (or ./gpu_results) so they come back with the device tool.
set -uo pipefail
out="${OUT:-gpu_results}"
mkdir -p "$out"
nvidia-smi | tee "$out/nvidia-smi.txt"
python -m pytest -q -m gpu 2>&1 | tail -20 | tee "$out/pytest-gpu.txt"
timeout 420 python scripts/bench_gpu.py --docs "${DOCS:-20000}" 2>&1 | grep -v -E "Loading|Writing" | tee "$out/bench_gpu.txt"
# How busy the pipeline keeps the GPU (device_busy from CUDA events), serial vs side-by-side tasks
timeout 300 python scripts/bench_pipeline.py --cuda --docs "${PIPELINE_DOCS:-6000}" 2>&1 | grep -v -E "Loading|Writing" | tee "$out/bench_pipeline_cuda.txt"
