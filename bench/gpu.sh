#!/usr/bin/env bash
# The GPU checks as one command, for a CUDA machine that has PyTorch, Triton, CMake, pybind11 and
# scikit-build-core: build the extension with its CUDA kernels, run the GPU-relevant tests, run every
# bench on the GPU. Logs and the bench JSON go to bench/results and, when OUT is set, to $OUT too.
#
#   bash bench/gpu.sh [all|tests|bench]
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
out=${OUT:-bench/results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0  # compiled Triton: the interpreter cannot be recorded in a graph
py=${PYTHON:-python3}

if ! "$py" -m pip install -q --no-build-isolation --no-deps -e . >"$out/gpu-build.log" 2>&1; then
  tail -40 "$out/gpu-build.log"
  exit 1
fi
"$py" -c "import json, mridpm; print(json.dumps(mridpm.info(), default=str))" | tee "$out/gpu-info.json"

status=0
if [[ $what == all || $what == tests ]]; then
  "$py" -m pytest -q -p no:cacheprovider tests/test_accelerate.py tests/test_capturable.py tests/ops tests/mri \
    tests/nets 2>&1 | tee "$out/gpu-tests.txt" | tail -40
  [[ ${PIPESTATUS[0]} == 0 ]] || status=1
fi
if [[ $what == all || $what == bench ]]; then
  "$py" -m bench --device cuda 2>&1 | tee "$out/gpu-bench.txt" | grep -v Warning
  [[ ${PIPESTATUS[0]} == 0 ]] || status=1
  [[ $out == bench/results ]] || cp bench/results/all-cuda.json "$out/" 2>/dev/null
fi
exit $status
