#!/usr/bin/env bash
# GPU throughput figures (prepared for one H100; about 8 minutes, the 8B MFU run last and optional): random-init Qwen3 shapes with
# Qwen3's vocabulary, bf16. Writes JSON into ${OUT:-benchmarks/gpu}. Run from the repository root
# with the package and the bench extra installed:  pip install -e '.[bench]' && bash benchmarks/gpu.sh
set -euo pipefail
OUT="${OUT:-benchmarks/gpu}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" || true
run() {  # name, timeout seconds, command...
  local name=$1 limit=$2; shift 2
  echo "== $name"
  if timeout "$limit" "$@" > "$OUT/$name.json" 2> "$OUT/$name.err"; then tail -n 3 "$OUT/$name.json"; else echo "   failed or timed out (see $OUT/$name.err)"; fi
}
# sampling: fast path vs plain generate (LoRA r=32 on all projections), batch 256, 128 new tokens
run sample_0.6b 200 sail bench sample --json --model 0.6b --dtype bfloat16 --batch 256 --new-tokens 128 --prompt-len 64 --repeats 2 --compiled-baseline
run sample_0.6b_compiled 200 sail bench sample --json --model 0.6b --dtype bfloat16 --batch 256 --new-tokens 128 --prompt-len 64 --repeats 2 --compile
run sample_1.7b 120 sail bench sample --json --model 1.7b --dtype bfloat16 --batch 256 --new-tokens 128 --prompt-len 64 --repeats 2
run sample_8b   150 sail bench sample --json --model 8b   --dtype bfloat16 --batch 64  --new-tokens 128 --prompt-len 64 --repeats 1
# one SAIL-RevKL iteration vs TRL's OnlineDPOTrainer, same model, prompts and batch
run loop_0.6b 150 sail bench loop --json --model-path random:0.6b --dtype bfloat16 --batch 64 --new-tokens 128 --rank 32 --warmup 1 --repeats 3 --rounds 1 --engine fast
# log-prob memory before/after on a 152k vocabulary
run logprob_0.6b 60 sail bench logprob --json --model 0.6b --dtype bfloat16 --batch 32 --response-len 128
# training-step MFU at 8B shapes (sail only; the target is >= 35 % of the dense bf16 peak): last, the slowest to set up
run loop_8b_mfu 240 sail bench loop --json --model-path random:8b --dtype bfloat16 --batch 16 --new-tokens 64 --rank 32 --warmup 1 --repeats 2 --rounds 1 --engine fast --no-trl
echo "results in $OUT"
