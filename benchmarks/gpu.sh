#!/usr/bin/env bash
# GPU throughput figures (prepared for one H100 or H200; not yet timed on a GPU: each run is capped by
# its timeout below, about 21 minutes in all, the 8B MFU run last and optional): random-init Qwen3
# shapes with Qwen3's vocabulary, bf16. Writes JSON into ${OUT:-benchmarks/gpu}. Run from the repository root
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
# the inner update on the 0.6B LoRA factor set (r = 32, all 7 projections): Muon and every spectral penalty kind (pr, renyi,
# entropy, fro_nuclear; value + gradient) against an AdamW step, then each kind as a share of loop_0.6b's training step
run optim_0.6b 120 sail bench optim --json --model 0.6b --device cuda --repeats 10
python - "$OUT" <<'PY' || echo "   penalty share of a step: not computed"
import json, sys
out = sys.argv[1]
optim, loop = (json.load(open(f"{out}/{name}.json")) for name in ("optim_0.6b", "loop_0.6b"))
step_ms = 1e3 * loop["sail"]["step_s"]
kinds = [key[len("penalty_"):-len("_ms")] for key in optim if key.startswith("penalty_") and key.endswith("_ms")]
share = {"step_ms": step_ms, **{f"penalty_{k}_share_of_step": optim[f"penalty_{k}_ms"] / step_ms for k in kinds}}
json.dump(share, open(f"{out}/penalty_share_of_step.json", "w"), indent=2)
print("   penalty / training step:", ", ".join(f"{k} {100 * share[f'penalty_{k}_share_of_step']:.2f} %" for k in kinds))
PY
# log-prob memory before/after on a 152k vocabulary
run logprob_0.6b 60 sail bench logprob --json --model 0.6b --dtype bfloat16 --batch 32 --response-len 128
# training-step MFU at 8B shapes (sail only; the target is >= 35 % of the dense bf16 peak): last, the slowest to set up
run loop_8b_mfu 240 sail bench loop --json --model-path random:8b --dtype bfloat16 --batch 16 --new-tokens 64 --rank 32 --warmup 1 --repeats 2 --rounds 1 --engine fast --no-trl
echo "results in $OUT"
