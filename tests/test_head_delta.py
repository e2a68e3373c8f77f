"""The head-only parametrisation (a dense delta on the output head) and the frozen-start reference."""

import torch

from sail.models.frozen_start import frozen_start_reference
from sail.models.head import DeltaHead, attach_delta_head, delta_head_of
from sail.models.lora import LoraAdapterConfig, attach_lora
from sail.models.tiny import tiny_qwen3


def _model():
    return tiny_qwen3(0, vocab_size=7, hidden_size=8, layers=1, heads=2, kv_heads=1)


def test_delta_head_trains_only_the_delta_and_keeps_hidden_states():
    model = _model()
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        base_logits = model(input_ids=ids).logits
        hidden = model.get_decoder()(input_ids=ids).last_hidden_state
    embeddings = model.get_input_embeddings().weight
    head = attach_delta_head(model)
    assert delta_head_of(model) is head and isinstance(model.get_output_embeddings(), DeltaHead)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["lm_head.delta"]
    assert head.weight.shape == (7, 8) and head.base.weight is embeddings  # still tied, frozen
    with torch.no_grad():
        head.delta.copy_(torch.randn(7, 8, generator=torch.Generator().manual_seed(0)))
        logits = model(input_ids=ids).logits
        torch.testing.assert_close(model.get_decoder()(input_ids=ids).last_hidden_state, hidden)
        torch.testing.assert_close(logits, hidden @ (embeddings + head.delta).T)
        with head.disabled():
            torch.testing.assert_close(model(input_ids=ids).logits, base_logits)
        assert (model(input_ids=ids).logits - base_logits).abs().max() > 1e-2
    torch.testing.assert_close(model.get_input_embeddings().weight, embeddings)


def test_frozen_start_reference_computes_the_starting_adapter():
    model = attach_lora(_model(), LoraAdapterConfig(rank=2, alpha=4.0), seed=0)
    gen = torch.Generator().manual_seed(1)
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():
        for p in params:
            p.add_(0.5 * torch.randn(p.shape, generator=gen))
    reference = frozen_start_reference(model)
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        start_logits = model(input_ids=ids).logits
        for p in params:
            p.add_(0.5 * torch.randn(p.shape, generator=gen))
    moved = model(input_ids=ids).logits  # a graph built before entering the context
    with torch.no_grad(), reference():
        torch.testing.assert_close(model(input_ids=ids).logits, start_logits)
    assert (moved.detach() - start_logits).abs().max() > 1e-3
    moved.sum().backward()  # still valid: the context swapped storage, it wrote no values
    assert all(p.grad is not None for p in params)
    torch.testing.assert_close(model(input_ids=ids).logits, moved)
