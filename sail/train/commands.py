"""`sail train [--config FILE.yaml] [--set key=value ...] [--output-dir DIR] [--resume DIR]`."""

from __future__ import annotations

import sys
from pathlib import Path


def cmd_train(args) -> int:
    import yaml

    from sail.config import ConfigError, build
    from sail.data import DataError
    from sail.train.config import TrainConfig, load_config
    from sail.train.trainer import Trainer, TrainingError

    try:
        if args.resume:
            run_dir = Path(args.resume)
            saved = run_dir / "config.yaml"
            if not saved.is_file():
                raise ConfigError("--resume", f"{saved} not found: not a sail run directory")
            if args.config or args.set:
                raise ConfigError("--resume", "a resumed run keeps its saved config; drop --config/--set")
            cfg = build(TrainConfig, yaml.safe_load(saved.read_text())["config"])
        else:
            cfg = load_config(args.config, args.set)
            run_dir = Path(args.output_dir) if args.output_dir else None  # the trainer names a default
        trainer = Trainer(cfg, run_dir, resume=bool(args.resume))
        summary = trainer.run()
        run_dir = trainer.run_dir
    except (ConfigError, DataError, TrainingError, ValueError) as exc:
        print(f"sail train: error: {exc}", file=sys.stderr)
        return 2
    if not trainer.is_main:
        return 0
    print(
        f"{run_dir}: {summary['steps']} steps; held-out reward {summary['reward_start']:.4f} → {summary['reward_end']:.4f} "
        f"(reference {summary['reference_reward']:.4f}); win rate vs reference {summary['win_rate_vs_reference_end']:.3f}; "
        f"KL {summary['kl_policy_to_ref_end']:.4f}"
    )
    return 0


def add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="SAIL-RevKL training of a LoRA adapter (embedded tiny default without arguments)")
    p.add_argument("--config", help="YAML config (see docs/training.md)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. objective.gamma=1e-3")
    p.add_argument("--output-dir", help="run directory (default runs/<timestamp>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR exactly from its last checkpoint")
    p.set_defaults(func=cmd_train)
