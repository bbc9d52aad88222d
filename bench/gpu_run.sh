#!/usr/bin/env bash
# Everything that needs a GPU, in one command (the device tool's machine: Python 3.12, numba +
# numba-cuda 0.30.4, torch, numpy 2.5 which numba-cuda cannot import: a numpy 2.4 wheel is carried
# in .whl/). Usage: bash bench/gpu_run.sh [tests|bench|all] ; results under $OUT (or ./gpu-out).
set -o pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
what=${1:-all}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python3 -c "import numpy, numba, torch; from numba import cuda; print('numpy', numpy.__version__, 'numba', numba.__version__, 'torch', torch.__version__, cuda.get_current_device().name)"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv
python3 setup.py build_ext --inplace -q >"$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }
if [ "$what" = gemm ]; then  # the GEMM kernel's variants (tiles, register cap, unrolling)
  python3 -W ignore bench/gpu_gemm_variants.py 2>&1 | tee "$OUT/gemm_variants.log"
  exit
fi
if [ "$what" != bench ]; then
  python3 -m pytest tests/test_cuda.py -q -x -p no:cacheprovider 2>&1 | tee "$OUT/test_cuda.log" | tail -5
  python3 -m pytest tests -q -p no:cacheprovider -k "cuda and not test_cuda" ${PYTEST_ARGS:-} \
    2>&1 | tee "$OUT/test_all_cuda.log" | tail -25
fi
if [ "$what" != tests ]; then
  python3 -m fastbp bench --device cuda --rounds ${ROUNDS:-5} --json "$OUT/bench_cuda.json" \
    ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench_cuda.log"
fi
