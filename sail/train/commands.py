"""`sail train [--config FILE.yaml | RECIPE ...] [--set key=value ...] [--output-dir DIR [--overwrite]] [--resume DIR]`.

Without ``--config`` the run starts from the default recipe (:mod:`sail.train.recipes`) that the
command line registers, ``--set`` overrides included. ``--config`` may be given several times (files
and recipe names, merged left to right). ``--help`` lists every config key with its type, neutral
default and docstring.
"""

from __future__ import annotations

import argparse
import os
import secrets
from pathlib import Path

from sail.config import ConfigError, add_config_arguments
from sail.train.console import quiet_third_party


def config_from_arguments(configs: list[str], overrides: list[str], default_recipe: str | None):
    """The run's config: neutral defaults ← each of ``configs`` (a YAML file or a recipe name), or the
    default recipe when there is none ← ``overrides``."""
    from sail.config import load_yaml, merge
    from sail.train.config import load_config
    from sail.train.recipes import recipe

    if not configs:
        return load_config(None, overrides, base=recipe(default_recipe) if default_recipe else None)
    data: dict = {}
    for config in configs:
        data = merge(data, load_yaml(config) if Path(config).is_file() else recipe(config))
    return load_config(None, overrides, base=data)


def check_creatable(path: Path, key: str) -> None:
    """Refuse at once, naming ``key``, a directory that could not be made later: a file, one under a
    file, or one on a file system that refuses (read-only, no permission, ``/proc``, full). The test
    is a directory made and removed in the nearest existing parent."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise ConfigError(key, f"{path} is a file, not a directory")
        return
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(key, f"cannot create {path}: {parent} is a file")
    probe = parent / f".sail-probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        probe.mkdir()
    except OSError as exc:
        raise ConfigError(key, f"cannot create {path}: {parent}: {exc.strerror or exc}") from None
    probe.rmdir()


def cmd_train(args) -> int:
    """Errors reach :func:`sail.cli.main`, which prints them as one line with their exit status."""
    from sail.train.run_dir import resume_config
    from sail.train.trainer import Trainer

    if args.resume:
        if args.config:
            raise ConfigError("--resume", "a resumed run keeps its saved config; drop --config (--set may change run.steps and the logging keys)")
        run_dir = Path(args.resume)
        cfg = resume_config(run_dir, args.set)
    else:
        cfg = config_from_arguments(args.config, args.set, args.default_recipe)
        run_dir = Path(args.output_dir) if args.output_dir else None  # the trainer names a default
        if run_dir is not None:
            check_creatable(run_dir, "--output-dir")
    quiet_third_party()
    trainer = Trainer(cfg, run_dir, resume=bool(args.resume), overwrite=args.overwrite)
    summary = trainer.run()
    run_dir = trainer.run_dir
    if not trainer.is_main:
        return 0
    print(headline(run_dir, summary))
    return 0


def headline(run_dir, summary: dict) -> str:
    """The last line of ``sail train``: the run's headline figures from its summary (first and last
    evaluation), with the misalignment rate before and after when the run logs one."""
    first, last = summary["evals"][0], summary["evals"][-1]
    parts = [
        f"{run_dir}: {summary['steps']} steps in {summary['seconds_this_process']:.0f} s",
        f"held-out reward {summary['reward_start']:.4f} → {summary['reward_end']:.4f} (reference {summary['reference_reward']:.4f})",
    ]
    if isinstance(first.get("eval/misalignment_rate"), float) and isinstance(last.get("eval/misalignment_rate"), float):
        parts.append(f"misalignment rate {first['eval/misalignment_rate']:.3f} → {last['eval/misalignment_rate']:.3f}")
    parts.append(f"win rate vs reference {summary['win_rate_vs_reference_end']:.3f}")
    parts.append(f"KL(π‖π_ref) {summary['kl_policy_to_ref_end']:.4f}, KL(π_ref‖π) {last['eval/kl_ref_to_policy']:.4f}")
    return "; ".join(parts)


class _HelpWithKeys(argparse.Action):
    """``-h``: the usage, then every config key (built only when asked: it imports torch)."""

    def __init__(self, option_strings, dest, default_recipe: str | None = None, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)
        self.default_recipe = default_recipe

    def __call__(self, parser, namespace, values, option_string=None):
        from sail.config import help_text
        from sail.train.config import TrainConfig
        from sail.train.recipes import recipe_names, recipe_path

        lines = []
        if self.default_recipe:
            lines.append(f"without --config: the recipe {self.default_recipe!r} ({recipe_path(self.default_recipe)})")
        lines.append(f"recipes (--config NAME): {', '.join(recipe_names()) or 'none'}")
        lines += ["", "config keys (--set KEY=VALUE; type = neutral default):", help_text(TrainConfig)]
        parser.epilog = "\n".join(lines)
        parser.print_help()
        parser.exit()


def add_train_parser(sub, default_recipe: str | None = None) -> None:
    """Register ``sail train``; ``default_recipe`` is the recipe run without ``--config``."""
    p = sub.add_parser(
        "train",
        help="SAIL-RevKL training of a LoRA adapter (the default recipe without arguments)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
    )
    p.add_argument("-h", "--help", action=_HelpWithKeys, default_recipe=default_recipe, help="show this help, with every config key, and exit")
    add_config_arguments(p, "a YAML config file or a recipe name; repeat to merge several (docs/training.md)", "objective.gamma=1e-3", repeatable=True)
    p.add_argument("--output-dir", help="run directory (default runs/<timestamp>); must be absent or empty unless --overwrite")
    p.add_argument(
        "--overwrite", action="store_true",
        help="delete what the run directory holds (another run) before starting; without it a non-empty one is refused",
    )
    p.add_argument(
        "--resume", metavar="DIR",
        help="continue the run in DIR exactly from its newest checkpoint; --set may change the keys that keep it exact (run.steps, logging)",
    )
    p.set_defaults(func=cmd_train, default_recipe=default_recipe)
