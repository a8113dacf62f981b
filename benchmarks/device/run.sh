#!/usr/bin/env bash
# On the GPU machine: every GPU-only check of the README, most important first, within one lease.
# Each step's log (and JSON) goes to $OUT; a step gets at most its cap and what is left of BUDGET s.
set -u
OUT=${OUT:-/tmp/vla-gpu}; mkdir -p "$OUT"; BUDGET=${BUDGET:-540}; t0=$SECONDS
if [ -f .whl/site312.tar.xz ]; then tar xJf .whl/site312.tar.xz -C /tmp && export PYTHONPATH=/tmp/site312:src
else export PYTHONPATH=src; fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false
TD=${TESTDATA:-.gpu/testdata}; [ -d "$TD" ] || TD=../shared/testdata
step() {
  local name=$1 cap=$2; shift 2; local left=$((BUDGET - (SECONDS - t0))); local lim=$((cap < left ? cap : left))
  [ "$lim" -gt 5 ] || { echo "== $name skipped: no time left"; return; }
  echo "== $name (cap ${lim}s, at $((SECONDS - t0))s)"
  timeout "$lim" "$@" > "$OUT/$name.log" 2>&1; echo "rc=$? after $((SECONDS - t0))s" >> "$OUT/$name.log"
  grep -av '%|\|it/s]\|Warning\|warnings.warn' "$OUT/$name.log" | tail -25
}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c \
  "import torch, transformers, accelerate; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
  'transformers', transformers.__version__, 'accelerate', accelerate.__version__)"; } > "$OUT/env.log" 2>&1
cat "$OUT/env.log"
step numerics 60 python3 benchmarks/gpu_numerics.py --device cuda --testdata "$TD" --json "$OUT/numerics.json"
step step_table 210 python3 benchmarks/gpu_step.py --batch-sizes 8 32 --warmup 2 --steps 5 --json "$OUT/step_table.json"
step max_batch_80gib 120 python3 benchmarks/gpu_step.py --batch-sizes --max-batch --memory-gib 80 --sides ours
step data_path 80 python3 benchmarks/gpu_step.py --batch-sizes 8 --checkpointing on --sides ours ours+data --steps 10
step compile 150 python3 benchmarks/gpu_step.py --batch-sizes 8 --checkpointing off --sides ours ours+compile
