#!/usr/bin/env bash
# One lease's GPU checks, in one call (device time is scarce: each step has its own time limit, and a
# step that fails or runs out of time does not stop the next). From the project root on a CUDA machine,
# after `bash ../shared/gpu/bundle.sh` here and `. .gpu/setup.sh` there:
#     bash bench/gpu.sh OUT_DIR [QUALITY_SECONDS]
# writes OUT_DIR/speed.json and .log, OUT_DIR/quickstart_bf16.log and OUT_DIR/quality_ft.{log,md,json}.
set -u
out=${1:?usage: bash bench/gpu.sh OUT_DIR [QUALITY_SECONDS]}
quality_seconds=${2:-330}
encoder=${MINILM:-/tmp/minilm}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"

# 1. speed: BERT-base-shaped encoder at CPC size, bf16 autocast, batch 64 (issue 14's GPU figures)
timeout 140 python bench/speed.py --device cuda --batch 64 --bf16 --json "$out/speed.json" \
  > "$out/speed.log" 2>&1; echo "speed rc=$?" | tee -a "$out/device.txt"

# 2. train.py end to end with Accelerate bf16 on the embedded patents, encoder fine-tuned
timeout 60 python train.py --quickstart --encoder "$encoder" --mixed-precision bf16 --epochs 2 \
  --output-dir /tmp/quickstart_bf16 > "$out/quickstart_bf16.log" 2>&1
echo "quickstart rc=$?" | tee -a "$out/device.txt"

# 3. full fine-tuning of MiniLM on dronesr (issue 11's GPU rows); results.json is rewritten after
#    each model, so a time-out keeps the models that finished
timeout "$quality_seconds" python bench/quality.py --models tmm-mean,thmm-mean,flat-mean --full-finetune \
  --mixed-precision bf16 --encoder "$encoder" --epochs 6 --patience 2 --learning-rate 5e-5 \
  --out /tmp/quality_ft > "$out/quality_ft.log" 2>&1
echo "quality rc=$?" | tee -a "$out/device.txt"
cp /tmp/quality_ft/results.md "$out/quality_ft.md" 2>/dev/null
cp /tmp/quality_ft/results.json "$out/quality_ft.json" 2>/dev/null
tail -n 25 "$out/speed.log"; tail -n 6 "$out/quickstart_bf16.log"; tail -n 12 "$out/quality_ft.log"
