"""`sail bench loop`: one SAIL-RevKL iteration against TRL's ``OnlineDPOTrainer``, same model,
prompts and batch.

Both sides train the same LoRA adapter (rank, alpha, all 7 projections) on the same base model,
from the same prompts, with B prompts per step and 2 sampled responses per prompt, ``max_new_tokens``
new tokens at temperature 1, the same programmatic reward, AdamW at the same learning rate. Each
side runs in its own subprocess (so peak memory is its own): ``warmup`` steps, then ``repeats``
timed steps, whose median is the round's step time. The two sides alternate for ``rounds`` rounds
(sail, TRL, sail, TRL, …) and each side reports its best round, so a load that comes and goes on a
shared machine hits both sides alike.

* ``sail``: :meth:`sail.train.trainer.Trainer.train_step` — sample, label, policy + reference
  forward, SAIL-RevKL loss (score term, exact per-position KL), backward, optimiser step. Phases are
  timed separately afterwards on the same batch size: ``sample``, ``label``, ``reference`` (the
  adapter-off forward alone), ``loss_backward`` (policy + reference forward, loss, backward),
  ``update``. The training step's model FLOPs utilisation (``mfu`` against the GPU's datasheet
  peak, ``mfu_vs_matmul`` against a matmul timed in the same process) is that of
  ``loss_backward``; :mod:`sail.bench.mfu` states the FLOP count.
* ``trl``: ``OnlineDPOTrainer.train`` (TRL ≥ 1.x, ``trl.experimental.online_dpo``), step time from
  a callback around each optimiser step; generated tokens counted in the reward function.

``--model-path random:0.6b`` (or ``1.7b``, ``8b``, ``tiny``) benchmarks a random-init Qwen3 of those
shapes (:mod:`sail.bench.models`), as the GPU figures are taken.

tokens/s counts generated response tokens (through EOS). peak_mem_mb: ``torch.cuda.max_memory_allocated``
on a GPU, the process's peak resident set size on the CPU. ``speedup_vs_trl`` = sail samples/s ÷
TRL samples/s. TRL is a benchmark-only extra (``pip install -e .[bench]``).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from sail.io import dumps_strict, loads_strict

SAMPLES_PER_PROMPT = 2


def _peak_mem_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _prompts(n: int, seed: int) -> list[str]:
    from sail.tasks import default as task

    return task.sample_prompts(n, seed=seed)


def run_sail(opts: dict) -> dict:
    import torch

    from sail.bench.sample import _best_seconds
    from sail.loop import SailConfig, draw_kl_responses, kl_draw_source, sail_loss
    from sail.oracles import bradley_terry_labels
    from sail.tasks import default as task
    from sail.train.config import load_config
    from sail.train.trainer import Trainer

    prompts_file = os.path.join(opts["workdir"], "prompts.jsonl")
    task.write_prompts_jsonl(prompts_file, _prompts(512, opts["seed"]))
    overrides = [
        f"model.name_or_path={opts['model']}",
        f"data.prompts={prompts_file}",
        "oracle.path=sail.tasks.default:reward",  # the same reward TRL gets
        "data.n_eval=1",
        f"sampling.max_new_tokens={opts['max_new_tokens']}",
        f"sampling.engine={opts['engine']}",
        f"model.lora.rank={opts['rank']}",
        f"model.lora.alpha={2 * opts['rank']}",
        f"optimizer.lr={opts['lr']}",
        f"run.batch_size={opts['batch']}",
        f"run.steps={opts['warmup'] + opts['repeats']}",
        "run.progress=false",
        "spectral.log_every=0",
        f"run.mixed_precision={opts['mixed_precision']}",
        f"model.dtype={opts['dtype']}",
        f"objective.kl_estimator={opts.get('kl_estimator', 'sequence')}",
    ]
    trainer = Trainer(load_config(None, overrides), os.path.join(opts["workdir"], "run"))
    device = trainer.device
    seconds, tokens = [], []
    for i in range(opts["warmup"] + opts["repeats"]):
        _sync(device)
        start = time.perf_counter()
        row = trainer.train_step()
        _sync(device)
        if i >= opts["warmup"]:
            seconds.append(time.perf_counter() - start)
            tokens.append(row["perf/tokens_per_s"] * row["perf/step_s"])
    step_s = statistics.median(seconds)
    samples = opts["batch"] * SAMPLES_PER_PROMPT

    # phases, on one batch of the same size
    policy, objective = trainer.policy, SailConfig(**vars(trainer.cfg.objective))
    gen = torch.Generator().manual_seed(opts["seed"])
    batch = policy.encode_prompts(_prompts(opts["batch"], opts["seed"] + 1), device)
    responses = policy.sample(batch, SAMPLES_PER_PROMPT, generator=gen)

    def label():
        r = trainer.oracle.scores(batch, responses)
        return bradley_terry_labels(r[:, 0], r[:, 1], "sample", gen)

    p_win = label()

    def loss_backward():
        trainer.optimizer.zero_grad(set_to_none=True)
        loss, _ = sail_loss(policy, batch, responses, p_win, objective, gen, True, trainer.state["ema_baseline"])
        loss.backward()

    def update():  # a step of size 0 would change nothing measurable; time the real step on the real grads
        trainer.optimizer.step()

    repeats = max(1, opts["repeats"])
    phases = {
        "sample": _best_seconds(lambda: policy.sample(batch, SAMPLES_PER_PROMPT, generator=gen), repeats, device),
        "label": _best_seconds(label, repeats, device),
        "reference": _best_seconds(lambda: policy.ref_logprob(batch, responses), repeats, device),
        # the `sequence` estimator of KL(π_ref‖π_θ) draws one reference response per prompt
        "reference_decode": _best_seconds(lambda: draw_kl_responses(policy, batch, objective, gen), repeats, device),
        "loss_backward": _best_seconds(loss_backward, repeats, device),
    }
    loss_backward()
    phases["update"] = _best_seconds(update, repeats, device)
    return {
        **_mfu(trainer.model, batch, responses, phases["loss_backward"], device, opts["dtype"]),
        "step_s": step_s,
        "samples_per_s": samples / step_s,
        "tokens_per_s": statistics.median(tokens) / step_s,
        "phase_ms": {k: v * 1e3 for k, v in phases.items()},
        "kl_estimator": objective.kl_estimator,
        # share of a step spent drawing the KL's reference responses (0 when the estimator draws none)
        "reference_decode_share_of_step": phases["reference_decode"] / step_s if kl_draw_source(objective) == "reference" else 0.0,
        "peak_mem_mb": _peak_mem_mb(device),
        "engine": opts["engine"],
    }


def run_trl(opts: dict) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    from sail.models.lora import LORA_TARGETS_ALL_LINEAR
    from sail.tasks import default as task

    generated: list[int] = []

    def reward(prompts, completions, completion_ids=None, **_):
        users = [p[-1]["content"] if isinstance(p, list) else p for p in prompts]
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        if completion_ids is not None:  # padded rows: count through the first EOS, as sail does
            eos = tokenizer.eos_token_id
            generated.append(sum(ids.index(eos) + 1 if eos in ids else len(ids) for ids in completion_ids))
        return [float(r) for r in task.reward(users, texts)]

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds, self.start = [], None

        def on_step_begin(self, args, state, control, **kwargs):
            _sync(device)
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            _sync(device)
            self.seconds.append(time.perf_counter() - self.start)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(opts["model"])
    dtype = getattr(torch, opts["dtype"])
    model = AutoModelForCausalLM.from_pretrained(opts["model"], dtype=dtype)
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in _prompts(512, opts["seed"])])
    steps = opts["warmup"] + opts["repeats"]
    args = OnlineDPOConfig(
        output_dir=os.path.join(opts["workdir"], "trl"),
        per_device_train_batch_size=opts["batch"],
        gradient_accumulation_steps=1,
        max_steps=steps,
        learning_rate=opts["lr"],
        max_new_tokens=opts["max_new_tokens"],
        temperature=1.0,
        beta=0.1,
        report_to=[],
        save_strategy="no",
        logging_steps=10**6,
        use_cpu=device.type == "cpu",
        bf16=opts["mixed_precision"] == "bf16",
        fp16=opts["mixed_precision"] == "fp16",
        seed=opts["seed"],
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    lora = LoraConfig(r=opts["rank"], lora_alpha=2 * opts["rank"], target_modules=list(LORA_TARGETS_ALL_LINEAR), task_type="CAUSAL_LM")
    timer = StepTimer()
    trainer = OnlineDPOTrainer(
        model=model, reward_funcs=reward, args=args, train_dataset=data, processing_class=tokenizer, peft_config=lora, callbacks=[timer]
    )
    trainer.train()
    timed = timer.seconds[opts["warmup"] :]
    step_s = statistics.median(timed)
    tokens = statistics.median(generated[opts["warmup"] : opts["warmup"] + len(timed)]) if generated else float("nan")
    import trl

    return {
        "step_s": step_s,
        "samples_per_s": opts["batch"] * SAMPLES_PER_PROMPT / step_s,
        "tokens_per_s": tokens / step_s,
        "peak_mem_mb": _peak_mem_mb(device),
        "trl_version": trl.__version__,
    }


def _mfu(model, batch, responses, seconds: float, device, dtype: str) -> dict:
    """Model FLOPs utilisation of the ``loss_backward`` phase (:mod:`sail.bench.mfu`)."""
    from sail.bench.mfu import datasheet_tflops, linear_weights, lora_weights, measured_matmul_tflops, step_flops

    config = model.config
    prompts, n, length = responses.tokens.shape
    sequences = prompts * n
    flops = step_flops(
        linear_weights(model), config.num_hidden_layers, config.hidden_size, config.vocab_size, sequences,
        batch.input_ids.shape[1] + length, int(responses.mask.sum()), lora_weights(model),
    )
    achieved = flops / seconds / 1e12
    matmul, sheet = measured_matmul_tflops(device, dtype), datasheet_tflops(device, dtype)
    return {
        "train_step_tflops": achieved,
        "matmul_tflops": matmul,
        "mfu_vs_matmul": achieved / matmul,
        "datasheet_tflops": sheet,
        "mfu": achieved / sheet if sheet else None,
    }


def _best_of(rounds: list[dict]) -> dict:
    best = min(rounds, key=lambda r: r["step_s"])
    return {**best, "rounds_step_s": [r["step_s"] for r in rounds]}


def _worker(which: str, opts: dict) -> dict:
    """Run one side in a fresh interpreter; its JSON result is the last line it prints."""
    cmd = [sys.executable, "-m", "sail.bench.loop", which, json.dumps(opts)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode != 0:
        raise RuntimeError(f"sail bench loop: the {which} run failed:\n{proc.stderr[-4000:]}")
    return loads_strict(proc.stdout.strip().splitlines()[-1])


def run(
    model=None, batch=16, max_new_tokens=8, rank=8, lr=1e-3, warmup=2, repeats=5, engine="hf", trl=True, dtype="float32",
    mixed_precision="no", seed=0, rounds=2, threads=0, kl_estimator="sequence",
) -> dict:
    import torch
    import transformers

    if model is None:
        from sail.tasks import default as task

        model = str(task.ensure_base_model())
    with tempfile.TemporaryDirectory() as workdir:
        from sail.bench.models import resolve_model

        model = resolve_model(model, workdir, dtype)
        opts = dict(
            model=model, batch=batch, max_new_tokens=max_new_tokens, rank=rank, lr=lr, warmup=warmup, repeats=repeats,
            engine=engine, dtype=dtype, mixed_precision=mixed_precision, seed=seed, workdir=workdir, threads=threads,
            kl_estimator=kl_estimator,
        )
        sail_rounds, trl_rounds = [], []
        for _ in range(max(1, rounds)):
            sail_rounds.append(_worker("sail", opts))
            if trl:
                trl_rounds.append(_worker("trl", opts))
        sail_out = _best_of(sail_rounds)
        trl_out = _best_of(trl_rounds) if trl else None
    return {
        "model": model,
        "batch": batch,
        "samples_per_step": batch * SAMPLES_PER_PROMPT,
        "max_new_tokens": max_new_tokens,
        "rank": rank,
        "dtype": dtype,
        "sail": sail_out,
        "trl": trl_out,
        "speedup_vs_trl": sail_out["samples_per_s"] / trl_out["samples_per_s"] if trl_out else None,
        "rounds": max(1, rounds),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "threads": threads or torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def _cmd(args) -> int:
    from sail.bench.commands import print_result

    if args.trl:
        try:
            import trl  # noqa: F401
        except ImportError:
            print("sail bench loop: TRL is not installed (pip install -e '.[bench]'), or pass --no-trl", file=sys.stderr)
            return 2
    out = run(
        args.model_path, args.batch, args.new_tokens, args.rank, args.lr, args.warmup, args.repeats, args.engine, args.trl,
        args.dtype, args.mixed_precision, args.seed, args.rounds, args.threads, args.kl_estimator,
    )
    return print_result(out, args.json, _text)


def _text(out: dict) -> str:
    from sail.theory.report import table

    sail, trl = out["sail"], out["trl"]
    rows = [("sail (" + sail["engine"] + " sampler)", sail["samples_per_s"], sail["tokens_per_s"], sail["peak_mem_mb"])]
    if trl:
        rows.append(("TRL OnlineDPOTrainer " + trl["trl_version"], trl["samples_per_s"], trl["tokens_per_s"], trl["peak_mem_mb"]))
    mfu = f"{sail['mfu']:.1%} of the datasheet peak, " if sail["mfu"] else ""
    lines = [
        f"{out['model']}: {out['samples_per_step']} samples/step, {out['max_new_tokens']} new tokens, LoRA r={out['rank']}, {out['device']}",
        table(rows, ("iteration", "samples/s", "tokens/s", "peak MB")),
        table(sorted(sail["phase_ms"].items(), key=lambda kv: -kv[1]), ("sail phase", "ms")),
        f"KL estimator {sail['kl_estimator']}: the reference decode is {sail['reference_decode_share_of_step']:.1%} of a step",
        f"training step (loss forward + backward): {sail['train_step_tflops']:.3g} TFLOP/s, {mfu}"
        f"{sail['mfu_vs_matmul']:.1%} of a {sail['matmul_tflops']:.3g} TFLOP/s matmul measured here",
    ]
    if out["speedup_vs_trl"]:
        lines.append(f"sail / TRL samples/s: {out['speedup_vs_trl']:.2f}x")
    return "\n".join(lines)


def register(benches) -> None:
    p = benches.add_parser("loop", help="one SAIL-RevKL iteration vs TRL's OnlineDPOTrainer (same model, prompts, batch)")
    p.add_argument(
        "--model-path", default=None,
        help="base model directory, or random:<preset> (random-init Qwen3 of tiny|0.6b|1.7b|8b shapes with Qwen3's vocabulary; "
        "default: the embedded task's tiny Qwen3)",
    )
    p.add_argument("--batch", type=int, default=16, help="prompts per step (2 responses each)")
    p.add_argument("--new-tokens", type=int, default=8)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--engine", choices=("hf", "fast"), default="hf", help="sail's sampler")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    p.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default="no")
    p.add_argument("--rounds", type=int, default=2, help="alternating sail/TRL rounds; each side reports its best")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads in each run (0: torch's default)")
    p.add_argument("--no-trl", dest="trl", action="store_false", help="measure sail only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kl-estimator", default="sequence", help="objective.kl_estimator of sail's step")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd)


if __name__ == "__main__":  # worker entry point: python -m sail.bench.loop {sail|trl} OPTIONS_JSON
    which, options = sys.argv[1], json.loads(sys.argv[2])
    if options.get("threads"):
        import torch

        torch.set_num_threads(options["threads"])
    result = run_sail(options) if which == "sail" else run_trl(options)
    print(dumps_strict(result))
