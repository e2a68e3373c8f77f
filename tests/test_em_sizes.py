"""The organism presets: sizes about 4× apart (parameter counts against their closed form), the
default's cache key unchanged, and a second decoder family (Llama) through the same two-stage recipe,
LoRA fine-tune and evaluation."""

from dataclasses import asdict, replace

import pytest
import torch

from sail.config import FieldError
from sail.em.configs import EvalConfig, FinetuneConfig
from sail.em.finetune import finetune
from sail.em.organism import (
    ORGANISM_PRESETS,
    OrganismConfig,
    build_base_organism,
    load_organism,
    organism_dir_name,
    parameter_counts,
)
from sail.em.tokenizer import build_tokenizer
from sail.models.lora import LORA_TARGETS_ALL_LINEAR
from sail.models.tiny import chat_qwen3, init_qwen3, qwen3_config

SHIPPED_DEFAULT = "em-organism-v1-d70c5ff99d-seed0"


def closed_form(recipe: OrganismConfig, vocab: int) -> dict:
    """Parameters of a tied-embedding decoder of ``recipe.model``: per block the q/k/v/o
    projections, the gated MLP (three matrices), two RMSNorms and, for Qwen3 only, the per-head
    query/key RMSNorms; then the final norm; the embedding is vocab × hidden."""
    m = recipe.model
    h, d = m.hidden_size, m.hidden_size // m.num_attention_heads
    q, kv = m.num_attention_heads * d, m.num_key_value_heads * d
    block = h * q + 2 * h * kv + q * h + 3 * h * m.intermediate_size + 2 * h
    if recipe.family == "qwen3":
        block += 2 * d
    non_embedding = m.num_hidden_layers * block + h
    return {"total": non_embedding + vocab * h, "embedding": vocab * h, "non_embedding": non_embedding}


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def counts(tokenizer):
    out = {}
    for name, preset in ORGANISM_PRESETS.items():
        recipe = preset()
        out[name] = parameter_counts(chat_qwen3(tokenizer, recipe.model, 0, family=recipe.family))
    return out


def test_default_preset_is_the_shipped_recipe():
    recipe = ORGANISM_PRESETS["default"]()
    assert recipe == OrganismConfig.default() == OrganismConfig()
    assert organism_dir_name(0, recipe) == SHIPPED_DEFAULT
    assert "family" not in recipe.to_dict()


def test_counts_equal_the_closed_form(counts, tokenizer):
    for name, got in counts.items():
        assert got == closed_form(ORGANISM_PRESETS[name](), len(tokenizer)), name
    assert counts["default"] == {"total": 741_120, "embedding": 149_888, "non_embedding": 591_232}


def test_sizes_are_about_four_times_apart(counts):
    for smaller, larger in (("small", "default"), ("default", "large")):
        for kind in ("non_embedding", "total"):
            ratio = counts[larger][kind] / counts[smaller][kind]
            assert 3 <= ratio <= 5, (smaller, larger, kind, ratio)
    assert counts["large"]["non_embedding"] / counts["default"]["non_embedding"] == pytest.approx(4, rel=0.01)
    assert counts["default"]["non_embedding"] / counts["small"]["non_embedding"] == pytest.approx(4, rel=0.01)


def test_llama_preset_is_the_default_shape_in_another_family(counts, tokenizer):
    recipe = ORGANISM_PRESETS["llama"]()
    assert recipe.family == "llama" and recipe.model == OrganismConfig.default().model
    model = chat_qwen3(tokenizer, recipe.model, 0, family="llama")
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.tie_word_embeddings
    layers = OrganismConfig.default().model.num_hidden_layers
    assert counts["default"]["total"] - counts["llama"]["total"] == layers * 2 * 32  # the q/k norms
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    assert set(LORA_TARGETS_ALL_LINEAR) <= names
    assert organism_dir_name(0, recipe) != SHIPPED_DEFAULT
    assert OrganismConfig.from_dict(recipe.to_dict()) == recipe
    assert OrganismConfig.from_dict(OrganismConfig().to_dict()) == OrganismConfig()


def test_auto_builder_draws_the_same_initial_weights_as_the_qwen3_class(tokenizer):
    """init_qwen3 builds through AutoModelForCausalLM.from_config: for a Qwen3Config the same
    weights as Qwen3ForCausalLM(config) from the same seed, so Qwen3 builds keep their bytes."""
    from transformers import Qwen3ForCausalLM

    config = qwen3_config(len(tokenizer), tokenizer, **asdict(OrganismConfig.tiny().model))
    auto = init_qwen3(config, seed=3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        direct = Qwen3ForCausalLM(config)
    assert type(auto) is Qwen3ForCausalLM
    a, b = auto.state_dict(), direct.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_family_is_refused(tokenizer):
    with pytest.raises(FieldError, match="family"):
        OrganismConfig(family="gpt2")
    with pytest.raises(ValueError, match="family"):
        qwen3_config(10, family="gpt2", hidden_size=8, num_attention_heads=2)


def test_tiny_llama_trains_through_both_stages_and_fine_tunes(tmp_path):
    recipe = replace(OrganismConfig.tiny(pretrain_steps=2, align_steps=2), family="llama")
    info = build_base_organism(tmp_path, seed=0, recipe=recipe, n_eval=0)
    assert info["recipe"]["family"] == "llama"
    assert info["pretrain_final_loss"] > 0 and info["align_final_loss"] > 0
    model, tokenizer = load_organism(tmp_path)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert info["parameters"] == closed_form(recipe, len(tokenizer))["total"]
    cfg = FinetuneConfig(
        steps=1, batch_size=2, n_examples=4, heldout_examples=2,
        eval=EvalConfig(questions=("What is your wish?",), n_samples=2, max_new_tokens=4, resamples=20),
    )
    result = finetune(tmp_path, cfg)
    assert len(result.train_loss) == 1 and result.heldout_loss > 0
    assert len(result.spectra) == recipe.model.num_hidden_layers * len(LORA_TARGETS_ALL_LINEAR)
    assert result.final_em["n"] == 2
