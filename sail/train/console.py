"""What ``sail train`` and ``sail export`` show: the start banner, the progress bar's live figures,
and nothing of third-party progress bars."""

from __future__ import annotations

ROUTE_NAMES = {"online_oracle": "SAIL-PR", "online_self": "SAIL-PP", "dataset_self": "SAIL-DP", "offline_dpo": "offline DPO"}
KL_NAMES = {"ref_to_policy": "KL(π_ref‖π_θ)", "policy_to_ref": "KL(π_θ‖π_ref)"}


def banner(trainer) -> str:
    """A few lines on what a trainer is about to run: the run directory, the model and its
    trainable parameters, the routes, β and γ, the KL estimator and direction, the device and the
    number of processes."""
    cfg = trainer.cfg
    params = list(trainer.model.parameters())
    total, trainable = sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)
    routes = ", ".join(f"{ROUTE_NAMES[name]} p={p:g}" for name, p in vars(cfg.routes).items() if name in ROUTE_NAMES and p > 0)
    step = trainer.state["step"]
    lr = f" lr {cfg.optimizer.lr:g}" if cfg.optimizer.lr is not None else ""
    n_eval = len(trainer.eval_prompts)
    kl = KL_NAMES.get(cfg.objective.kl_direction, cfg.objective.kl_direction)
    processes = trainer.processes
    path = str(getattr(getattr(trainer.model, "config", None), "_name_or_path", "") or "")
    loaded = f" (from {path})" if path and path != cfg.model.name_or_path else ""
    lines = [
        f"sail train: {trainer.run_dir}" + (f" (resumed at step {step})" if step else ""),
        f"  model      {cfg.model.name_or_path}{loaded}: {total:,} parameters, {trainable:,} trainable ({cfg.model.trainable})",
        f"  routes     {routes}",
        f"  objective  β = {cfg.objective.beta:g}, γ = {cfg.objective.gamma:g}, {kl} by the {cfg.objective.kl_estimator} estimator",
        f"  run        {trainer.total_steps} steps, {cfg.optimizer.name}{lr}, evaluation every {cfg.run.eval_every} steps on {n_eval} held-out prompts",
        f"  device     {trainer.device}, {processes} process{'es' if processes > 1 else ''}",
    ]
    return "\n".join(lines)


def progress_figures(row: dict, kl_direction: str) -> dict[str, str]:
    """The progress bar's figures from a step's metric row: the training reward, the loss and the KL
    estimate (those the row holds; a skipped step holds none)."""
    figures = {
        "reward": row.get("charts/reward_mean"),
        "loss": row.get(f"losses/{row.get('route')}/loss", row.get("losses/loss")),
        "kl": row.get(f"charts/kl_{kl_direction}"),
    }
    return {name: f"{value:.4g}" for name, value in figures.items() if isinstance(value, (int, float))}


def quiet_third_party() -> None:
    """Silence what is not the user's business during ``sail train`` and ``sail export``: transformers' progress bars
    (loading weights, writing model shards; this also turns off the hub's), datasets' (reading a
    file into its cache; the data loader says what it read in one line) and the deprecation
    warning transformers raises from its own code when PEFT asks ``is_gradient_checkpointing``.
    Warnings and errors about the user's model still show."""
    import warnings

    import datasets
    import huggingface_hub.utils
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
