#!/usr/bin/env bash
# The GPU checks as one command, for a CUDA machine that has PyTorch, Triton, CMake, pybind11 and
# scikit-build-core: build the extension with its CUDA kernels, run the CUDA and compiled-Triton test
# cases, run every bench on the GPU. It ends within BUDGET_S seconds (default 540, under the 10 minutes
# a first GPU session gives one command): the tests get at most 40% of what the build leaves, the
# benches the rest, each stopped at its share (the runner rewrites bench/results/all-cuda.json after
# every bench, so a cut run keeps what it measured). Logs and all-cuda.json go to bench/results and,
# when OUT is set, to $OUT too.
#
#   bash bench/gpu.sh [all|tests|bench]
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
out=${OUT:-bench/results}
budget=${BUDGET_S:-540}
mkdir -p "$out" bench/results
# Compiled Triton: the conftest would choose it on a GPU anyway; the interpreter cannot be recorded in a graph.
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
py=${PYTHON:-python3}

if ! "$py" -m pip install -q --no-build-isolation --no-deps -e . >"$out/gpu-build.log" 2>&1; then
  tail -40 "$out/gpu-build.log"
  exit 1
fi
"$py" -c "import json, mridpm; print(json.dumps(mridpm.info(), default=str))" | tee "$out/gpu-info.json"
"$py" -c "from mridpm import _ext; assert _ext.cuda_built()" 2>/dev/null ||
  echo "WARNING: mridpm._C has no CUDA kernels (see $out/gpu-build.log): only the Triton cases run" | tee -a "$out/gpu-build.log"
echo "built in ${SECONDS} s"

status=0
if [[ $what == all || $what == tests ]]; then
  pct=40; [[ $what == tests ]] && pct=100
  share=$(( (budget - SECONDS) * pct / 100 )); (( share > 30 )) || share=30  # timeout 0 would mean none
  # Every CUDA and Triton case (the kernels' pairs, CUDA graphs, the launch and noise checks); the CPU
  # cases, and the CPU emulation of the CUDA kernels, are CI's.
  timeout -k 10 "$share" "$py" -m pytest -v -p no:cacheprovider --durations=15 -k "(cuda or triton) and not emulation" \
    tests/ops tests/test_accelerate.py tests/mri/test_never_silent.py tests/nets/test_speed.py >"$out/gpu-tests.txt" 2>&1
  rc=$?
  grep -E "FAILED|ERROR" "$out/gpu-tests.txt" | head -40
  tail -25 "$out/gpu-tests.txt"
  [[ $rc == 124 ]] && echo "tests stopped after ${share} s"
  [[ $rc == 0 ]] || status=1
fi
if [[ $what == all || $what == bench ]]; then
  share=$(( budget - SECONDS - 10 )); (( share > 30 )) || share=30
  timeout -k 10 "$share" "$py" -m bench --device cuda 2>&1 | tee "$out/gpu-bench.txt" | grep -v Warning
  rc=${PIPESTATUS[0]}
  [[ $rc == 124 ]] && echo "bench stopped after ${share} s; all-cuda.json holds the benches that finished"
  [[ $rc == 0 ]] || status=1
  [[ $out == bench/results ]] || cp bench/results/all-cuda.json "$out/" 2>/dev/null
fi
echo "gpu.sh: ${SECONDS} s, status ${status}"
exit $status
