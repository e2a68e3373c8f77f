"""SAIL-RevKL training of a LoRA adapter on a causal LM, with the one loss of :mod:`sail.loop`.

Each optimiser step: pick a route (SAIL-PR / PP / DP / offline DPO) with the configured
probabilities; for each of ``grad_accum`` micro-batches of ``batch_size`` prompts, get a pair per
prompt (sampled from π_θ, or from the pair file), label it (oracle, self-label, or the file's
chosen/rejected), and back-propagate ``sail_loss / grad_accum`` (+ the spectral penalty); then
step the optimiser. Routes and prompt indices come from one ``torch.Generator`` whose state is
checkpointed; sampling and labels from generators derived from (seed, step, micro-batch, process);
the global seed is reset from (seed, step, process) at the start of each step. So a resumed run
repeats the uninterrupted one exactly on the same machine.

Several processes (``accelerate launch``) split each global batch and average their gradients;
see :mod:`sail.train.distributed`. Only the main process writes the run directory.

Run directory: ``config.yaml`` (:mod:`sail.train.run_dir`), ``metrics.jsonl``, ``completions.jsonl``, ``spectra.jsonl``, ``summary.json``,
``adapter/`` (PEFT ``save_pretrained``; ``head_delta.safetensors`` when only the head trains) and
``checkpoint-<step>/`` (see :mod:`sail.train.checkpoint`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import torch

from sail.io import write_json_atomically
from sail.loop import MicroBatch, sail_step
from sail.oracles import ScoreOracle, bradley_terry_labels, load_callable
from sail.spectral.logging import SPECTRA_FILE, SpectralLogger, drop_rows_after
from sail.train.callbacks import TrainerCallback, notify
from sail.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, write_weights
from sail.train.config import ROUTES, TrainConfig, check_complete
from sail.train.console import banner, progress_figures
from sail.train.metrics import ONLINE_ROUTES, ends_with_eos, route_metrics
from sail.train.distributed import (
    average_gradients_,
    check_replicas_agree,
    make_accelerator,
    mean_over_processes,
    process_generator,
    shard_base_weights,
    sum_over_processes,
)
from sail.train.errors import RunFailure, TrainingError
from sail.train.evaluation import Evaluation, evaluate
from sail.train.metrics import CompletionsWriter, MetricsWriter, NullWriter, environment
from sail.train.policy import load_policy
from sail.train.prompts import apply_chat_template_kwargs, load_run_data
from sail.train.rewards import build_scorer
from sail.train.run_dir import check_new_run_dir, check_resumed_config, clear_run_dir, resolved_config, write_run_config

KL_DRAWS = 1
"""The salt of the generator for the KL term's own draws (see :meth:`Trainer._micro_batch`)."""

NUMERIC_FAILURE = re.compile(r"overflow|\binf\b|`inf`|\bnan\b|`nan`", re.IGNORECASE)
"""What torch says when the values it computes with are no longer finite numbers."""
LIKELY_CAUSE = "the training state is no longer finite; the learning rate is the likely cause (optimizer.lr={lr}): lower it"

__all__ = ["RunFailure", "Trainer", "TrainingError"]


class Trainer:
    def __init__(
        self, cfg: TrainConfig, run_dir: str | Path | None = None, resume: bool = False, *, overwrite: bool = False, prompts=None,
        pairs=None, eval_prompts=None, callbacks: Iterable[TrainerCallback] = (),
    ):
        """``run_dir`` None: ``runs/<timestamp>``, named by the main process for all of them; it is
        made once everything loaded, so a run that fails to start leaves no directory behind.
        ``resume``: continue the run in ``run_dir`` from its newest checkpoint that verifies, if the
        config differs from the checkpoint's only in keys that may change on resume
        (:func:`~sail.train.run_dir.check_resumed_config`). Otherwise ``run_dir`` must be absent or
        empty, or ``overwrite`` replaces what it holds (:func:`~sail.train.run_dir.clear_run_dir`) once
        everything loaded.
        ``callbacks``: objects with ``on_step(trainer, row)`` and/or ``on_evaluate(trainer, row)``
        (:mod:`sail.train.callbacks`).
        ``prompts``, ``pairs``, ``eval_prompts``: a ``datasets.Dataset`` (or a list of dicts) in place
        of the config key of that name (:mod:`sail.train.prompts`)."""
        check_complete(cfg)
        self.cfg = cfg
        self.accelerator = make_accelerator()
        if run_dir is None:
            from accelerate.utils import broadcast_object_list

            run_dir = broadcast_object_list([f"runs/{time.strftime('%Y%m%d-%H%M%S')}"])[0]
        self.run_dir = Path(run_dir)
        if resume and overwrite:
            raise TrainingError("--overwrite starts a run afresh, --resume continues one: give one of them")
        if not resume:  # before anything loads: refused in seconds, nothing touched
            check_new_run_dir(self.run_dir, overwrite)
        self.process, self.processes = self.accelerator.process_index, self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process
        # the data is read and checked before any model loads
        self.prompts, self.eval_prompts, self.pairs = load_run_data(cfg, prompts, pairs, eval_prompts, log=self.is_main)
        torch.manual_seed(cfg.run.seed)
        self.policy = load_policy(cfg)
        self.model = self.policy.model
        self.device = self.accelerator.device
        self.model.to(self.device)
        if cfg.run.fsdp and self.processes > 1:
            shard_base_weights(self.model, self.accelerator)
        self.optimizer = cfg.optimizer.build(self.model)
        self.scorer = build_scorer(cfg)
        apply_chat_template_kwargs(cfg.data.chat_template_kwargs, self.policy, self.scorer)
        self.oracle = ScoreOracle(self.scorer, cfg.oracle.label_mode)
        self.eval_metrics = load_callable(cfg.run.eval_metrics, "run.eval_metrics") if cfg.run.eval_metrics else None
        self.generator = torch.Generator().manual_seed(cfg.run.seed)
        self._permutations: dict = {}
        self.schedule = cfg.schedule.build(self.optimizer, self.total_steps)
        self.state = {"step": 0, "ema_baseline": 0.0, "nonfinite_streak": 0, "skipped_steps": 0, "evals": []}
        resume_step = None
        if resume:
            resume_step = self._restore()
        self.accelerator.wait_for_everyone()  # every process has read the checkpoint before any writes
        if self.is_main:
            if resume:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            elif overwrite:
                clear_run_dir(self.run_dir)
            else:
                check_new_run_dir(self.run_dir)  # again: another run may have started there meanwhile
                self.run_dir.mkdir(parents=True, exist_ok=True)
            self._write_config()  # first, so a directory that holds anything holds its config
            drop_rows_after(self.run_dir / SPECTRA_FILE, resume_step)
        self.metrics = MetricsWriter(self.run_dir, cfg, resume_step) if self.is_main else NullWriter()
        self.completions = CompletionsWriter(self.run_dir, cfg.run.completions_per_eval, resume_step) if self.is_main else NullWriter()
        self.callbacks = list(callbacks)
        self.last_evaluation: Evaluation | None = None
        self.spectral_log = None
        if cfg.spectral.log_every and self.is_main and cfg.model.trainable == "lora":
            self.spectral_log = SpectralLogger(self.model, self.run_dir / SPECTRA_FILE, cfg.spectral.log_every, label=cfg.optimizer.name)
        if self.is_main and cfg.run.progress:
            print(banner(self), file=sys.stderr)

    # --- persistence ---------------------------------------------------------------------
    def _named_trainable(self) -> dict[str, torch.Tensor]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def _write_config(self) -> None:
        write_run_config(self.run_dir, self.cfg, environment())

    def _save_final(self) -> None:
        """``adapter/`` (PEFT ``save_pretrained``), or for the head parametrisation
        ``head_delta.safetensors`` holding one tensor ``delta`` [V, d], added to the LM head's weight."""
        write_weights(self.model, self.run_dir if self.cfg.model.trainable == "head" else self.run_dir / "adapter")

    def save(self) -> None:
        """The main process writes ``checkpoint-<step>/`` (replicas are identical) and drops the oldest
        beyond ``run.save_total_limit``; the others wait for it."""
        bad = next((name for name, p in self._named_trainable().items() if not torch.isfinite(p).all()), None)
        if bad is not None:  # never checkpointed: the run stops here
            raise RunFailure(f"step {self.state['step']}: parameter {bad} is not finite; {LIKELY_CAUSE.format(lr=self.cfg.optimizer.lr)}")
        if self.is_main:
            try:
                save_checkpoint(
                    self.run_dir, self.model, self.optimizer.state_dict(), self.generator.get_state(), self.state,
                    keep=self.cfg.run.save_total_limit, config=resolved_config(self.cfg),
                )
            except OSError as exc:  # a write error carries no file name: say which checkpoint
                exc.filename = exc.filename or str(self.run_dir / f"checkpoint-{self.state['step']}")
                raise
        self.accelerator.wait_for_everyone()

    def _restore(self) -> int:
        """Load the newest checkpoint that verifies and loads (an older one when the newest is
        damaged), once its config matches the run's but in the keys that may change on resume."""
        try:
            restored = load_checkpoint(self.run_dir, self.model)
        except CheckpointError as exc:
            raise TrainingError(f"--resume: {exc}") from None
        if self.is_main:
            for line in restored.skipped:
                print(f"sail train: --resume: skipped a checkpoint: {line}", file=sys.stderr)
        check_resumed_config(self.cfg, restored.config, restored.config_sha256, str(restored.path))
        step = int(restored.state["step"])
        if step > self.total_steps:
            raise TrainingError(f"--resume: {restored.path.name} is at step {step}, past the run's {self.total_steps} steps (run.steps)")
        try:
            self.optimizer.load_state_dict(restored.optimizer_state)
        except (ValueError, KeyError) as exc:
            raise TrainingError(f"--resume: the optimiser state of {restored.path} does not fit: {exc}") from None
        self.generator.set_state(restored.generator_state)
        self.state = restored.state
        return step

    # --- one step ------------------------------------------------------------------------
    def _choose_route(self) -> str:
        probs = torch.tensor(self.cfg.routes.probabilities(), dtype=torch.float64)
        return ROUTES[int(torch.multinomial(probs, 1, generator=self.generator))]

    def _step_indices(self, route: str) -> list[list[int]]:
        """This process's micro-batches of prompt (or pair) indices for one step.

        The global batch of B·A·P indices (A micro-batches, P processes) is drawn from the shared
        generator; process p takes its B·A of them. With ``run.sort_by_length`` they are ordered by
        prompt length before being cut into A micro-batches, so each micro-batch pads less; the
        step's gradient (the mean over all its pairs) does not depend on the grouping (with the
        ``ema`` or ``none`` baseline)."""
        B, A = self.cfg.run.batch_size, self.cfg.run.grad_accum
        population = len(self.prompts) if route in ONLINE_ROUTES else len(self.pairs)
        if self.cfg.run.epochs is None:
            idx = torch.randint(population, (B * A * self.processes,), generator=self.generator).tolist()
        else:
            idx = self._without_replacement("prompts" if route in ONLINE_ROUTES else "pairs", population, B * A * self.processes)
        mine = idx[self.process * B * A : (self.process + 1) * B * A]
        if self.cfg.run.sort_by_length and A > 1:
            texts = [self.prompts[i] if route in ONLINE_ROUTES else self.pairs[i].prompt for i in mine]
            lengths = self.policy.encode_prompts(texts).attention_mask.sum(-1).tolist()
            mine = [i for _, i in sorted(zip(lengths, mine), key=lambda pair: pair[0])]
        return [mine[a * B : (a + 1) * B] for a in range(A)]

    def _without_replacement(self, name: str, population: int, count: int) -> list[int]:
        """The next ``count`` indices of the stream of passes over ``name`` (prompts or pairs): pass e
        is a permutation of range(population) drawn from (seed, e); the position is checkpointed."""
        consumed = self.state.setdefault("consumed", {})
        start = consumed.get(name, 0)
        out = []
        for position in range(start, start + count):
            epoch, offset = divmod(position, population)
            key = (name, epoch)
            if key not in self._permutations:
                gen = torch.Generator().manual_seed(self.cfg.run.seed * 1_000_003 + epoch * 7919 + (name == "pairs"))
                self._permutations = {key: torch.randperm(population, generator=gen).tolist()}  # one pass kept
            out.append(self._permutations[key][offset])
        consumed[name] = start + count
        return out

    @property
    def total_steps(self) -> int:
        """``run.steps``, or with ``run.epochs`` ⌈epochs·N / global batch⌉, N the prompts (the pairs when
        no online route is used)."""
        run = self.cfg.run
        if run.epochs is None:
            return run.steps
        online = self.cfg.routes.online_oracle + self.cfg.routes.online_self > 0
        population = len(self.prompts) if online else len(self.pairs)
        return math.ceil(run.epochs * population / (run.batch_size * run.grad_accum * self.processes))

    def _set_learning_rate(self, step: int) -> float:
        """Every parameter group's rate at ``step`` from the schedule (a pure function of the step, so
        a skipped step or a resume changes nothing); returns the first group's."""
        for group, base, factor in zip(self.optimizer.param_groups, self.schedule.base_lrs, self.schedule.lr_lambdas):
            group["lr"] = base * factor(step)
        return self.optimizer.param_groups[0]["lr"]

    def _micro_batch(self, route: str, step: int, micro: int, idx: list[int]) -> MicroBatch:
        """One micro-batch of ``route``. Sampling and labels draw from this process's generator for
        (step, micro-batch); the KL's own draws (reference responses, or policy responses for
        dataset pairs) from a second one, so they do not depend on the route."""
        local = process_generator(self.cfg.run.seed, step, micro, self.process)
        kl_local = process_generator(self.cfg.run.seed, step, micro, self.process, KL_DRAWS)
        B = self.cfg.run.batch_size
        if route in ONLINE_ROUTES:
            prompts = self.policy.encode_prompts([self.prompts[i] for i in idx], self.device)
            responses = self.policy.sample(prompts, 2, generator=local)
            ended = ends_with_eos(responses, self.policy.eos_token_id)
            self._step_lengths.append(responses.mask.sum(-1).double().mean().item())
            self._step_eos.append(ended.double().mean().item())
            p_win = None
            if route == "online_oracle":
                rewards = self.oracle.scores(prompts, responses)
                if self.cfg.oracle.missing_eos_penalty:
                    rewards = rewards - self.cfg.oracle.missing_eos_penalty * (~ended).to(rewards.device, rewards.dtype)
                self._step_rewards.append(rewards.mean().item())
                p_win = bradley_terry_labels(rewards[:, 0], rewards[:, 1], self.cfg.oracle.label_mode, local, self.oracle.tie_tolerance)
            on_policy = True
        else:
            chosen = [self.pairs[i] for i in idx]
            prompts = self.policy.encode_prompts([p.prompt for p in chosen], self.device)
            responses = self.policy.encode_responses([[p.chosen, p.rejected] for p in chosen], self.device)
            p_win = None if route == "dataset_self" else torch.ones(B, dtype=torch.float64)
            on_policy = False
        self._step_tokens += int(responses.mask.sum())
        return MicroBatch(prompts, responses, p_win, on_policy, local, kl_local)

    def train_step(self) -> dict:
        """One update through :func:`sail.loop.sail_step` (the loop shared with the exact checkers):
        this method only chooses the route and the prompts, and supplies the hooks."""
        cfg = self.cfg
        step = self.state["step"]
        torch.manual_seed(cfg.run.seed * 1_000_003 + step * 1009 + self.process)  # dropout and anything else global
        route = self._choose_route()
        start = time.perf_counter()
        learning_rate = self._set_learning_rate(step)
        self._step_rewards, self._step_tokens, self._step_lengths, self._step_eos = [], 0, [], []
        batches = (self._micro_batch(route, step, micro, idx) for micro, idx in enumerate(self._step_indices(route)))
        use_autocast = cfg.run.mixed_precision != "no" and self.device.type == "cuda"
        amp_dtype = torch.bfloat16 if cfg.run.mixed_precision == "bf16" else torch.float16
        result = sail_step(
            self.policy,
            batches,
            self.optimizer,
            cfg.objective,
            accumulation=cfg.run.grad_accum,
            baseline_value=self.state["ema_baseline"],
            penalty=lambda: cfg.spectral.penalty_term(self.model),
            autocast=lambda: torch.autocast(self.device.type, dtype=amp_dtype, enabled=use_autocast),
            reduce_gradients=lambda params: average_gradients_(params, self.accelerator),
            all_agree=lambda flag: sum_over_processes(0.0 if flag else 1.0, self.accelerator, self.device) == 0,
            max_grad_norm=cfg.run.max_grad_norm,
        )
        row = {"step": step, "route": route, "charts/learning_rate": learning_rate}
        if result.skipped is not None:
            self.state["nonfinite_streak"] += 1
            self.state["skipped_steps"] += 1
            row[f"skipped_nonfinite_{result.skipped}"] = True
            if self.state["nonfinite_streak"] >= cfg.run.max_nonfinite:
                what = {"loss": "losses", "gradient": "gradients"}[result.skipped]
                raise RunFailure(
                    f"{self.state['nonfinite_streak']} non-finite {what} in a row at step {step}; stopping "
                    f"(run.max_nonfinite={cfg.run.max_nonfinite}; {LIKELY_CAUSE.format(lr=cfg.optimizer.lr)})"
                )
        else:
            totals = mean_over_processes(result.stats, self.accelerator, self.device)
            self.state["nonfinite_streak"] = 0
            decay = cfg.run.ema_decay
            self.state["ema_baseline"] = decay * self.state["ema_baseline"] + (1 - decay) * totals["losses/pair_term"]
            row.update(route_metrics(totals, route, cfg.objective))
            row["charts/grad_norm"] = result.grad_norm
            row["charts/distance_to_init"] = result.distance_to_init
        pairs = cfg.run.batch_size * cfg.run.grad_accum * self.processes
        tokens = sum_over_processes(self._step_tokens, self.accelerator, self.device)
        if self._step_rewards:
            mean_reward = sum(self._step_rewards) / len(self._step_rewards)
            row["charts/reward_mean"] = mean_over_processes({"r": mean_reward}, self.accelerator, self.device)["r"]
        if self._step_lengths:
            completions = {"length": sum(self._step_lengths) / len(self._step_lengths), "eos": sum(self._step_eos) / len(self._step_eos)}
            completions = mean_over_processes(completions, self.accelerator, self.device)
            row["charts/completion_length_mean"], row["charts/eos_rate"] = completions["length"], completions["eos"]
        elapsed = time.perf_counter() - start
        row.update({"perf/tokens_per_s": tokens / elapsed, "perf/samples_per_s": 2 * pairs / elapsed, "perf/step_s": elapsed})
        self.state["step"] = step + 1
        return row

    # --- evaluation ----------------------------------------------------------------------
    def evaluate(self) -> dict:
        """Held-out prompts: oracle reward of the policy and the reference, win rate, KL (:mod:`sail.train.evaluation`);
        the texts and rewards per prompt are kept in ``self.last_evaluation``."""
        self.last_evaluation = evaluate(self.policy, self.oracle, self.eval_prompts, self.eval_metrics, self.accelerator, self.device)
        return self.last_evaluation.metrics

    def _record_evaluation(self, step: int) -> None:
        """Evaluate, write the row to ``metrics.jsonl`` and the first completions to ``completions.jsonl``,
        then tell the callbacks."""
        row = {"step": step, **self.evaluate()}
        self.state["evals"].append(row)
        self.metrics.write(row)
        self.completions.write(step, self.last_evaluation.samples)
        notify(self.callbacks, "on_evaluate", self, row)

    @contextlib.contextmanager
    def _finite_or_fail(self, where: str):
        """A numeric failure of a training state that is no longer finite (an update that overflows,
        sampling from inf/nan probabilities) as a :class:`RunFailure` naming ``where`` and the likely
        cause; any other error passes through."""
        try:
            yield
        except (FloatingPointError, OverflowError, RuntimeError) as exc:
            if type(exc) is RuntimeError and not NUMERIC_FAILURE.search(str(exc)):
                raise
            why = " ".join(str(exc).split())
            raise RunFailure(f"{where}: {why}; {LIKELY_CAUSE.format(lr=self.cfg.optimizer.lr)}") from exc

    # --- the run -------------------------------------------------------------------------
    def run(self) -> dict:
        from tqdm.auto import tqdm

        cfg = self.cfg.run
        started = time.perf_counter()
        if self.state["step"] == 0 and not self.state["evals"]:
            self._record_evaluation(0)
        bar = tqdm(total=self.total_steps, initial=self.state["step"], desc="sail train", disable=not (cfg.progress and self.is_main))
        while self.state["step"] < self.total_steps:
            with self._finite_or_fail(f"step {self.state['step']}"):
                row = self.train_step()
            step = self.state["step"]
            if self.spectral_log is not None and step % self.spectral_log.every == 0:
                self.spectral_log.log(step, row)
            self.metrics.write(row)
            notify(self.callbacks, "on_step", self, row)
            bar.set_postfix(progress_figures(row, self.cfg.objective.kl_direction), refresh=False)
            if step % cfg.eval_every == 0 or step == self.total_steps:
                with self._finite_or_fail(f"the evaluation at step {step}"):
                    self._record_evaluation(step)
            if step % cfg.save_every == 0 or step == self.total_steps:
                self.save()
            bar.update(1)
        bar.close()
        check_replicas_agree([p for p in self.model.parameters() if p.requires_grad], self.accelerator)
        if self.is_main:
            self._save_final()
        first, last = self.state["evals"][0], self.state["evals"][-1]
        summary = {
            "steps": self.state["step"],
            "skipped_steps": self.state["skipped_steps"],
            "reward_start": first["eval/reward_mean"],
            "reward_end": last["eval/reward_mean"],
            "reward_gain": last["eval/reward_mean"] - first["eval/reward_mean"],
            "reference_reward": last["eval/reference_reward_mean"],
            "win_rate_vs_reference_end": last["eval/win_rate_vs_reference"],
            "kl_policy_to_ref_end": last["eval/kl_policy_to_ref"],
            "evals": self.state["evals"],
            "seconds_this_process": time.perf_counter() - started,
            "objective": dataclasses.asdict(self.cfg.objective),
            "optimizer": self.cfg.optimizer.name,
            "processes": self.processes,
        }
        if not all(math.isfinite(v) for v in (summary["reward_start"], summary["reward_end"])):
            raise RunFailure(f"evaluation produced non-finite rewards; {LIKELY_CAUSE.format(lr=self.cfg.optimizer.lr)}")
        if self.is_main:
            write_json_atomically(self.run_dir / "summary.json", summary, indent=1)
        self.accelerator.wait_for_everyone()
        return summary
