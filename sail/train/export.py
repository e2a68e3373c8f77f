"""`sail export RUN [--checkpoint STEP] [--merge] --output DIR [--force]`: a run's weights as a
directory that other tools load.

Without ``--merge``, the adapter alone: a PEFT LoRA adapter directory (``adapter_config.json``,
``adapter_model.safetensors``) for ``PeftModel.from_pretrained(base, DIR)``, or for
``model.trainable: head`` the file ``head_delta.safetensors``. With ``--merge``, a Hugging Face
model directory (config, safetensors weights, tokenizer) of the base model with the adapter merged
in (PEFT's ``merge_and_unload``; for the head, W + Δ as its own, untied, LM head) for
``AutoModelForCausalLM.from_pretrained(DIR)``.

The weights are those of ``checkpoint-STEP``, or without ``--checkpoint`` the newest checkpoint
that loads (the run's final ``adapter/`` when it has none). ``DIR`` is written in a staging
directory beside it and renamed into place; an existing non-empty ``DIR`` is replaced only with
``--force``, and never when it holds the run itself.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NamedTuple

from sail.config import ConfigError
from sail.train.commands import check_creatable
from sail.train.console import quiet_third_party

# the modules that import torch are imported where they are used: `sail --help` stays fast


class Exported(NamedTuple):
    output: Path
    source: Path
    """The weights file exported."""


def weights_source(run_dir: Path, trainable: str, step: int | None = None) -> Path:
    """The weights file to export: ``checkpoint-<step>``'s, else the newest checkpoint's that loads,
    else the run's final adapter; a checkpoint's files are first checked against its marker (sizes
    and sha256), and the weights are checked readable and finite."""
    from sail.train.checkpoint import (
        ADAPTER_FILE,
        HEAD_FILE,
        CheckpointError,
        checkpoint_at,
        list_checkpoints,
        read_weights,
        verify_checkpoint,
        weights_file,
    )

    final = run_dir / HEAD_FILE if trainable == "head" else run_dir / "adapter" / ADAPTER_FILE
    if step is not None:
        candidates = [checkpoint_at(run_dir, step)]
    else:
        candidates = [c.path for c in reversed(list_checkpoints(run_dir))] + [final.parent]
    reasons = []
    for directory in candidates:
        path = weights_file(directory)
        if path is None or (path.name == HEAD_FILE) != (trainable == "head"):
            reasons.append(f"{directory} holds no {'head delta' if trainable == 'head' else 'adapter'}")
            continue
        try:
            if directory != final.parent:
                verify_checkpoint(directory)
            read_weights(path)
        except CheckpointError as exc:
            reasons.append(str(exc))
            continue
        return path
    raise CheckpointError(reasons[0] if step is not None else f"{run_dir} has no checkpoint or final adapter that loads: {reasons[0]}")


def _check_output(run_dir: Path, output: Path, force: bool) -> None:
    run, out = run_dir.resolve(), output.resolve()
    if out == run or out in run.parents:
        raise ConfigError("--output", f"{output} holds the run directory {run_dir}; choose another directory")
    check_creatable(output, "--output")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise ConfigError("--output", f"{output} is not empty; choose another directory or pass --force to replace it")


def _merge_head(model):
    """The head parametrisation merged: the LM head's weight becomes W + Δ, its own tensor (the
    input embeddings keep W when they were tied to it)."""
    import torch

    from sail.models.head import delta_head_of

    head = delta_head_of(model)
    plain = head.base
    plain.weight = torch.nn.Parameter((plain.weight + head.delta).detach(), requires_grad=False)
    model.set_output_embeddings(plain)
    model.config.tie_word_embeddings = False
    model.config.get_text_config().tie_word_embeddings = False
    return model


def export_run(run_dir: str | Path, output: str | Path, step: int | None = None, merge: bool = False, force: bool = False) -> Exported:
    """Write the run's adapter (or, with ``merge``, the merged model) to ``output``."""
    from sail.models.head import attach_delta_head
    from sail.models.lora import attach_lora
    from sail.train.checkpoint import ADAPTER_FILE, HEAD_FILE, LEGACY_FILE, load_weights
    from sail.train.policy import load_base_model
    from sail.train.run_dir import read_run_config

    run_dir, output = Path(run_dir), Path(output)
    cfg = read_run_config(run_dir, key="RUN")
    source = weights_source(run_dir, cfg.model.trainable, step)
    _check_output(run_dir, output, force)
    staging = output.with_name(f".{output.name}.export-tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        if not merge and source.name != LEGACY_FILE:  # already a loadable adapter: copy it
            staging.mkdir(parents=True)
            names = [HEAD_FILE] if source.name == HEAD_FILE else [ADAPTER_FILE, "adapter_config.json"]
            for name in names:
                shutil.copy2(source.parent / name, staging / name)
        else:
            model, tokenizer = load_base_model(cfg)
            if cfg.model.trainable == "head":
                attach_delta_head(model)
                load_weights(model, source)
            elif source.name == ADAPTER_FILE:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, str(source.parent))
            else:  # a checkpoint from before step numbering: the run's own adapter settings
                model = attach_lora(model, cfg.model.lora, seed=cfg.run.seed)
                load_weights(model, source)
            if not merge:
                model.save_pretrained(str(staging))
            else:
                merged = _merge_head(model) if cfg.model.trainable == "head" else model.merge_and_unload()
                merged.save_pretrained(str(staging))
                tokenizer.save_pretrained(str(staging))
        if output.exists():
            shutil.rmtree(output)
        os.replace(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Exported(output, source)


def cmd_export(args) -> int:
    """Errors reach :func:`sail.cli.main`, which prints them as one line with their exit status."""
    quiet_third_party()
    exported = export_run(args.run, args.output, step=args.checkpoint, merge=args.merge, force=args.force)
    what = "merged model" if args.merge else "adapter"
    print(f"{exported.output}: {what} from {exported.source}")
    return 0


def add_export_parser(sub) -> None:
    """Register ``sail export``."""
    what = "write a run's adapter, or with --merge the base model with the adapter merged in, as a directory PEFT or transformers loads"
    p = sub.add_parser("export", help=what, description=what[0].upper() + what[1:] + ".")
    p.add_argument("run", metavar="RUN", help="the run directory")
    p.add_argument("--checkpoint", type=int, metavar="STEP", help="export checkpoint-STEP (default: the newest that loads)")
    p.add_argument("--merge", action="store_true", help="merge the adapter into the base model and write the whole model with its tokenizer")
    p.add_argument("--output", required=True, metavar="DIR", help="where to write it (absent or empty)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --output directory")
    p.set_defaults(func=cmd_export)
