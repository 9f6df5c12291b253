#!/usr/bin/env bash
# Every GPU figure and check of BENCHMARKS.md's GPU section, in one run.
#
# On the lent GPU machine, from the project root, after ../shared/device/prepare.sh here:
#   source .device/gpu_env.sh && bash tools/gpu_checks.sh
# Each step runs under its own timeout and goes on after a failure; results land in $OUT
# (default ./gpu_out): gpu_tests.txt and one JSON per benchmark. About 8 minutes in all.
# GPU_CHECKS_DRY=1 prints the commands without running them.
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}

step() {  # step SECONDS NAME COMMAND...
  local seconds=$1 name=$2
  shift 2
  echo "== $name: $*"
  [ -n "${GPU_CHECKS_DRY:-}" ] && return 0
  timeout "$seconds" "$@" > "$OUT/$name.txt" 2>&1
  echo "   exit $? (log: $OUT/$name.txt)"
  tail -n 4 "$OUT/$name.txt"
}

# all of tests/gpu (deterministic AMP training twice, CUDA graphs, fp16/bf16, batched NMS, ...)
step 300 gpu_tests "$PY" -m pytest -q -m gpu tests/gpu -p no:cacheprovider
# LR-ASPP-L 1024x2048 b8: default = the Predictor's path (target >= 1.3x torchvision eager fp32)
step 150 lraspp_eager "$PY" tools/benchmark.py --device cuda --model lraspp_large --sizes 1024x2048 \
  --batch-sizes 8 --variants default fp32 bf16 fp16+graphs fp16+channels_last --json "$OUT/lraspp_eager.json"
# best path (target >= 2.5x): Inductor with CUDA graphs
step 300 lraspp_compile "$PY" tools/benchmark.py --device cuda --model lraspp_large --sizes 1024x2048 \
  --batch-sizes 8 --variants fp16+compile+graphs fp16+compile --json "$OUT/lraspp_compile.json"
# SSDLite320 b64 end to end at score 0.001 (target >= 20x); per_image = the old NMS, for comparison
step 150 ssdlite "$PY" tools/benchmark.py --device cuda --model ssdlite_large --batch-sizes 64 \
  --det-score-thresh 0.001 --iters 10 --warmup 3 --json "$OUT/ssdlite.json"
step 120 ssdlite_per_image "$PY" tools/benchmark.py --device cuda --model ssdlite_large --batch-sizes 64 \
  --det-score-thresh 0.001 --det-nms per_image --iters 5 --warmup 2 --json "$OUT/ssdlite_per_image.json"
# the real recipe's step fed by the loader, 14 workers (target >= 90 % of the on-device rate)
step 240 train_seg "$PY" tools/benchmark.py --device cuda --model train_seg --workers 14 --decoded-cache \
  --synthetic-images 64 --iters 40 --warmup 10 --set data.batch_size=8 --json "$OUT/train_seg.json"
