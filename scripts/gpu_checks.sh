#!/usr/bin/env bash
# The checks that need a GPU, in one run, each step's output kept under OUTDIR (default ./gpu-checks):
# the CUDA tests, the GPU benchmark (--json OUTDIR/gpu.json, the README's GPU block rewritten) and
# where geed's time goes beside the bare passes (scripts/profile_gpu.py). Each step has its own time
# limit, so that one step's overrun leaves the others' results.
#
#     bash scripts/gpu_checks.sh [OUTDIR]
set -u
cd "$(dirname "$0")/.."
out=${1:-gpu-checks}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "== $name (at most $limit s)"
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
  tail -n 4 "$out/$name.log"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'triton', triton.__version__)"
step tests "${GPU_TESTS_S:-100}" python3 -m pytest -q tests/core/test_cuda.py
step benchmark "${GPU_BENCHMARK_S:-330}" python3 scripts/benchmark.py --device cuda --threads 8 --json "$out/gpu.json"
step profile "${GPU_PROFILE_S:-90}" python3 scripts/profile_gpu.py --threads 8
cp README.md "$out/README.md"
