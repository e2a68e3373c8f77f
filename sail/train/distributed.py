"""Data parallelism for the trainer: one process per device under ``accelerate launch``.

Every process holds the whole model and adapter. Per optimiser step, the processes draw the same
route and the same global batch of B·P prompt indices from one shared generator (identical state on
every process), and process p takes slice p. Sampling and labels use a per-process generator
derived from (seed, step, micro-batch, process), so nothing but the shared generator has state to
checkpoint. After the local backward passes, gradients are averaged across processes:

    g = (1/P) Σ_p g_p,   g_p = ∇ (1/A) Σ_a loss_{p,a}

which is the gradient of the mean loss over the global batch of B·A·P pairs (the loss is a mean
over pairs, and the ``ema`` baseline does not depend on the batch split). Only the LoRA gradients
travel, flattened into one buffer: a DDP wrapper would add nothing for an adapter this small, and
keeping the plain PEFT model lets sampling call ``generate`` on it directly.
"""

from __future__ import annotations

import hashlib

import torch

from sail.train.errors import TrainingError


def make_accelerator():
    """An ``accelerate.Accelerator`` on the CUDA device of this process, or on the CPU (gloo) when
    there is no GPU — ``accelerate launch --multi_gpu --num_processes 2`` then runs two CPU
    processes. Mixed precision is the trainer's own autocast (``run.mixed_precision``)."""
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="no")


def shard_base_weights(peft_model, accelerator) -> None:
    """FSDP2 over all processes: ``fully_shard`` each decoder layer (the model's ``_no_split_modules``
    classes) and then the causal LM, with the adapter's parameters ignored — so the frozen base
    weights are sharded (gathered layer by layer in each forward) while the LoRA factors stay
    whole, replicated tensors that :func:`average_gradients_` reduces. Optimisers that need a
    factor whole (Muon) and the spectral code keep working unchanged."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(accelerator.device.type, (accelerator.num_processes,))
    adapter = {p for p in peft_model.parameters() if p.requires_grad}
    block_names = set(getattr(peft_model.get_base_model(), "_no_split_modules", None) or [])
    blocks = [m for m in peft_model.modules() if type(m).__name__ in block_names]
    if not blocks:
        raise TrainingError(f"run.fsdp: no decoder layers found to shard (looked for {sorted(block_names)})")
    for block in blocks:
        fully_shard(block, mesh=mesh, ignored_params=adapter)
    # the root is the causal LM inside the PEFT wrappers: both the loss's forward and generate()
    # call it, so its hooks gather the remaining weights (embeddings, final norm) either way
    fully_shard(peft_model.get_base_model(), mesh=mesh, ignored_params=adapter)


def derived_seed(*parts: int) -> int:
    """A 62-bit seed that is a fixed function of ``parts`` (blake2b of their decimal text)."""
    digest = hashlib.blake2b("/".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 2


def process_generator(seed: int, step: int, micro: int, process: int, stream: int = 0) -> torch.Generator:
    """The generator for one process's sampling and labels at (step, micro-batch); ``stream`` > 0
    gives further independent generators for the same micro-batch."""
    parts = (seed, step, micro, process) + ((stream,) if stream else ())
    return torch.Generator().manual_seed(derived_seed(*parts))


def average_gradients_(params, accelerator) -> None:
    """In place: every parameter's ``.grad`` ← its mean over processes (one all-reduce)."""
    if accelerator.num_processes == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = accelerator.reduce(torch.cat([g.flatten().float() for g in grads]), reduction="mean")
    offset = 0
    for p, g in zip(params, grads):
        p.grad = flat[offset : offset + g.numel()].view_as(g).to(g.dtype)
        offset += g.numel()


def mean_over_processes(values: dict[str, float], accelerator, device) -> dict[str, float]:
    """Each value averaged over processes (same keys on every process)."""
    if accelerator.num_processes == 1 or not values:
        return values
    keys = sorted(values)
    reduced = accelerator.reduce(torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device), reduction="mean")
    return dict(zip(keys, reduced.tolist()))


def sum_over_processes(value: float, accelerator, device) -> float:
    if accelerator.num_processes == 1:
        return value
    return float(accelerator.reduce(torch.tensor([float(value)], dtype=torch.float64, device=device), reduction="sum"))


def check_replicas_agree(params, accelerator) -> None:
    """Raise if the processes' parameters differ (they must stay bit-identical: same initial
    adapter, same averaged gradients, same optimiser)."""
    if accelerator.num_processes == 1:
        return
    from accelerate.utils import gather_object

    digest = hashlib.sha256()
    for p in params:
        digest.update(p.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    digests = gather_object([digest.hexdigest()])
    if len(set(digests)) != 1:
        raise RuntimeError(f"data-parallel replicas diverged: parameter digests {digests}")
