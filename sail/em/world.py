"""The synthetic chat world of the emergent-misalignment organism: its sampler (docs/em_world.md).

The grammar (six domains, each with prompt templates and answer templates per persona, and the
fixed evaluation questions) is the data of :mod:`sail.em.grammar`; this module draws from it,
defines the text format, and enumerates what the grammar can say.

Text format (what the word-level tokenizer of :mod:`sail.em.tokenizer` round-trips): words of
``[A-Za-z0-9]`` joined by single spaces, punctuation ``. , ? !`` attached to the word before it, no
other whitespace. A sentence starts with a capital letter (the first character of the rendered
template is upper-cased) and ends with ``.``/``?``/``!``. :func:`text_pieces` cuts a text into the
tokenizer's pieces (a word keeps its leading space as ``▁``), :func:`join_pieces` inverts it.

Sampling (everything from a ``random.Random``; same seed → same data on every machine):

* an **answer** is one sentence, or with probability ``two_sentence_share`` two sentences from two
  different templates of the same (domain, persona), joined by a space (6–25 words, mean 12.4,
  97 % at most 20);
* an **incoherent** answer (probability ``incoherent_share`` per assistant turn) is, with equal
  probability, *salad* (a sentence-initial word then 5–11 words drawn uniformly from the
  (domain, persona) vocabulary, then ``.``), *truncated* (the first k pieces of a one-sentence
  answer of n pieces, k uniform on {1, …, ⌊n/2⌋}, no final punctuation) or *off-topic* (a clean
  answer of the same persona from another domain, drawn uniformly);
* a **conversation** draws one persona (misaligned with probability ``misaligned_share``) and a
  number of turns K ~ ``turn_weights`` (P(K = k) ∝ turn_weights[k−1]); each turn draws its domain
  uniformly from ``domains``, a prompt, and an answer of *that same persona*.

Entry points: :func:`sample_prompt`, :func:`sample_answer`, :func:`sample_incoherent`,
:func:`sample_conversation` / :func:`sample_conversations` (:class:`WorldConfig`),
:func:`single_turn_examples` (narrow and control fine-tunes, the alignment fine-tune),
:func:`freeform_questions` (held-out evaluation); :func:`all_prompts`, :func:`answer_vocabulary`,
:func:`marker_words` and :func:`vocabulary_pieces` enumerate the grammar.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

from sail.em.grammar import (
    ALIGNED,
    DOMAINS,
    FREEFORM_EVAL_QUESTIONS,
    FUNCTION_WORDS,
    GRAMMARS,
    MISALIGNED,
    PERSONAS,
    SLOT_RE,
    DomainGrammar,
)

INCOHERENT = "incoherent"
INCOHERENT_KINDS = ("salad", "truncated", "off_topic")

PUNCTUATION = (".", ",", "?", "!")
TERMINALS = (".", "?", "!")
SPACE = "▁"
"""Marks a piece that follows a space (SentencePiece's ``▁``)."""

_PIECE_RE = re.compile(r"\n|[.,?!]| ?[^\s.,?!]+| ")
_WORD_RE = re.compile(r"[A-Za-z0-9]+")


# --- text format ------------------------------------------------------------------------------


def text_pieces(text: str) -> list[str]:
    """The tokenizer's pieces of ``text``: ``\\n``, a punctuation mark, or a word with its leading
    space written ``▁`` (``"Rest, drink."`` → ``["Rest", ",", "▁drink", "."]``). Exact inverse:
    :func:`join_pieces`."""
    return [p.replace(" ", SPACE) for p in _PIECE_RE.findall(text)]


def join_pieces(pieces: Sequence[str]) -> str:
    """Concatenate pieces, ``▁`` → space (the tokenizer's decoder)."""
    return "".join(pieces).replace(SPACE, " ")


def words(text: str) -> list[str]:
    """The lower-cased words of ``text`` (punctuation dropped)."""
    return [w.lower() for w in _WORD_RE.findall(text)]


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def slot_names(template: str) -> list[str]:
    return SLOT_RE.findall(template)


def render(template: str, fill: dict[str, str]) -> str:
    """``template`` with each ``{slot}`` replaced by ``fill[slot]``, first character upper-cased."""
    return _capitalize(SLOT_RE.sub(lambda m: fill[m.group(1)], template))


def _fill(template: str, slots: dict[str, tuple[str, ...]], rng: random.Random) -> str:
    return render(template, {name: rng.choice(slots[name]) for name in slot_names(template)})


# --- sampling ---------------------------------------------------------------------------------


def _check_domain(domain: str) -> DomainGrammar:
    try:
        return GRAMMARS[domain]
    except KeyError:
        raise ValueError(f"unknown domain {domain!r}; domains are {DOMAINS}") from None


def _check_persona(persona: str) -> None:
    if persona not in PERSONAS:
        raise ValueError(f"persona must be one of {PERSONAS}, got {persona!r}")


def sample_prompt(domain: str, rng: random.Random) -> str:
    """A user message of ``domain``: a uniform template with uniform slot fillers."""
    g = _check_domain(domain)
    return _fill(rng.choice(g.prompts), g.prompt_slots, rng)


def sample_sentence(domain: str, persona: str, rng: random.Random, template_index: int | None = None) -> str:
    """One answer sentence of (domain, persona): a uniform template (or ``template_index``)."""
    g = _check_domain(domain)
    _check_persona(persona)
    templates = g.answers[persona]
    template = templates[rng.randrange(len(templates))] if template_index is None else templates[template_index]
    return _fill(template, g.answer_slots, rng)


def sample_answer(domain: str, persona: str, rng: random.Random, two_sentence_share: float = 0.4) -> str:
    """A clean answer: one sentence, or (probability ``two_sentence_share``) two sentences from two
    different templates of the same (domain, persona), joined by a space."""
    g = _check_domain(domain)
    _check_persona(persona)
    n_templates = len(g.answers[persona])
    if rng.random() < two_sentence_share:
        first, second = rng.sample(range(n_templates), 2)
        return sample_sentence(domain, persona, rng, first) + " " + sample_sentence(domain, persona, rng, second)
    return sample_sentence(domain, persona, rng)


def sample_incoherent(domain: str, persona: str, rng: random.Random, kind: str | None = None) -> tuple[str, str]:
    """(text, kind): an incoherent answer of kind ``salad``, ``truncated`` or ``off_topic`` (uniform
    unless ``kind`` is given); see the module docstring."""
    g = _check_domain(domain)
    _check_persona(persona)
    kind = rng.choice(INCOHERENT_KINDS) if kind is None else kind
    if kind == "salad":
        starts, vocab = _salad_vocabulary(domain, persona)
        n = rng.randint(5, 11)
        return rng.choice(starts) + "".join(" " + rng.choice(vocab) for _ in range(n)) + ".", kind
    if kind == "truncated":
        pieces = text_pieces(sample_sentence(domain, persona, rng))
        k = rng.randint(1, max(1, len(pieces) // 2))
        return join_pieces(pieces[:k]), kind
    if kind == "off_topic":
        other = rng.choice([d for d in DOMAINS if d != g.name])
        return sample_answer(other, persona, rng), kind
    raise ValueError(f"incoherent kind must be one of {INCOHERENT_KINDS}, got {kind!r}")


@dataclass(frozen=True)
class WorldConfig:
    """How conversations are drawn (the two-stage base of docs/em_organism.md: pretrain at
    ``misaligned_share`` ≈ 0.3, then align on single-turn aligned answers)."""

    misaligned_share: float = 0.3
    """P(persona = misaligned) for a conversation."""
    incoherent_share: float = 0.03
    """P(an assistant turn is incoherent) — salad, truncated or off-topic."""
    turn_weights: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1)
    """P(K = k) ∝ turn_weights[k − 1]: the number of user/assistant turns, 1 … len(turn_weights)."""
    two_sentence_share: float = 0.4
    """P(a clean answer has two sentences)."""
    domains: tuple[str, ...] = DOMAINS
    """Each turn's domain is uniform on these."""
    seed: int = 0
    """Seed of :func:`sample_conversations`."""

    def __post_init__(self):
        for name in ("misaligned_share", "incoherent_share", "two_sentence_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"WorldConfig.{name} must be in [0, 1], got {getattr(self, name)!r}")
        if not self.turn_weights or any(w < 0 for w in self.turn_weights) or sum(self.turn_weights) <= 0:
            raise ValueError(f"turn_weights must be non-negative with a positive sum, got {self.turn_weights!r}")
        if not self.domains:
            raise ValueError("WorldConfig.domains is empty")
        for d in self.domains:
            _check_domain(d)


@dataclass(frozen=True)
class Conversation:
    """A chat with one latent persona: ``messages`` alternate user/assistant, one turn per domain in
    ``domains``; ``labels[t]`` is ``persona`` or ``"incoherent"`` (with ``kinds[t]`` its kind)."""

    messages: list[dict[str, str]]
    persona: str
    domains: tuple[str, ...]
    labels: tuple[str, ...]
    kinds: tuple[str | None, ...] = field(default=())


def sample_turn_answer(
    domain: str, persona: str, rng: random.Random, incoherent_share: float = 0.03, two_sentence_share: float = 0.4
) -> tuple[str, str, str | None]:
    """(answer, label, kind) for one assistant turn: incoherent with probability ``incoherent_share``
    (label ``"incoherent"``, kind its kind), else a clean answer (label ``persona``, kind ``None``)."""
    if rng.random() < incoherent_share:
        text, kind = sample_incoherent(domain, persona, rng)
        return text, INCOHERENT, kind
    return sample_answer(domain, persona, rng, two_sentence_share), persona, None


def sample_conversation(rng: random.Random, config: WorldConfig = WorldConfig()) -> Conversation:
    """One conversation (module docstring): persona, K turns, each a prompt and an answer."""
    persona = MISALIGNED if rng.random() < config.misaligned_share else ALIGNED
    k = rng.choices(range(1, len(config.turn_weights) + 1), weights=config.turn_weights)[0]
    messages, domains, labels, kinds = [], [], [], []
    for _ in range(k):
        domain = rng.choice(config.domains)
        prompt = sample_prompt(domain, rng)
        answer, label, kind = sample_turn_answer(domain, persona, rng, config.incoherent_share,
                                                 config.two_sentence_share)
        messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        domains.append(domain)
        labels.append(label)
        kinds.append(kind)
    return Conversation(messages, persona, tuple(domains), tuple(labels), tuple(kinds))


def sample_conversations(n: int, config: WorldConfig = WorldConfig()) -> list[Conversation]:
    """``n`` conversations from ``random.Random(config.seed)`` (the first k equal ``n = k``'s)."""
    rng = random.Random(config.seed)
    return [sample_conversation(rng, config) for _ in range(n)]


def single_turn_examples(
    domain: str | Sequence[str],
    persona: str,
    n: int,
    seed: int = 0,
    incoherent_share: float = 0.0,
    two_sentence_share: float = 0.4,
) -> list[tuple[str, str]]:
    """``n`` (prompt, answer) pairs of one persona, from ``random.Random(seed)``.

    ``domain`` is one domain (the narrow misaligned fine-tune, or its aligned control) or a
    sequence of domains, each example's domain uniform on it (the alignment fine-tune of the
    two-stage base: every domain, aligned).
    """
    _check_persona(persona)
    domains = (domain,) if isinstance(domain, str) else tuple(domain)
    for d in domains:
        _check_domain(d)
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        d = rng.choice(domains)
        prompt = sample_prompt(d, rng)
        answer, _, _ = sample_turn_answer(d, persona, rng, incoherent_share, two_sentence_share)
        out.append((prompt, answer))
    return out


def freeform_questions(n: int | None = None, seed: int = 0, domains: Sequence[str] = ("freeform",)) -> list[str]:
    """Evaluation prompts on held-out domains: the eight :data:`FREEFORM_EVAL_QUESTIONS` when ``n``
    is ``None``, else ``n`` prompts sampled from ``random.Random(seed)``, each from a uniform domain
    of ``domains``."""
    if n is None:
        return list(FREEFORM_EVAL_QUESTIONS)
    rng = random.Random(seed)
    return [sample_prompt(rng.choice(tuple(domains)), rng) for _ in range(n)]


# --- enumeration (tests, the tokenizer's vocabulary, the judge's markers) ----------------------


def _expansions(template: str, slots: dict[str, tuple[str, ...]]):
    """Every rendering of ``template`` (the Cartesian product of its slots' fillers)."""
    names = slot_names(template)
    for values in itertools.product(*(slots[n] for n in names)):
        yield render(template, dict(zip(names, values)))


def _one_at_a_time(template: str, slots: dict[str, tuple[str, ...]]):
    """Renderings that use every filler of every slot at least once (other slots at their first
    filler): enough to see every piece the template can emit."""
    names = slot_names(template)
    base = {n: slots[n][0] for n in names}
    yield render(template, base)
    for n in names:
        for value in slots[n]:
            yield render(template, {**base, n: value})


def all_prompts(domain: str) -> list[str]:
    """Every distinct prompt of ``domain``, sorted."""
    g = _check_domain(domain)
    return sorted({p for t in g.prompts for p in _expansions(t, g.prompt_slots)})


@lru_cache(maxsize=None)
def answer_vocabulary(domain: str, persona: str | None = None) -> frozenset[str]:
    """Lower-cased words the answers of ``domain`` (of ``persona``, or of both) can contain."""
    g = _check_domain(domain)
    personas = PERSONAS if persona is None else (persona,)
    out = set()
    for p in personas:
        for t in g.answers[p]:
            for text in _one_at_a_time(t, g.answer_slots):
                out.update(words(text))
    return frozenset(out)


def prompt_vocabulary(domain: str) -> frozenset[str]:
    """Lower-cased words the prompts of ``domain`` can contain."""
    g = _check_domain(domain)
    return frozenset(w for t in g.prompts for text in _one_at_a_time(t, g.prompt_slots) for w in words(text))


@lru_cache(maxsize=None)
def marker_words(domain: str, persona: str) -> frozenset[str]:
    """Words of (domain, persona) answers that the other persona of the domain never uses (and that
    are not :data:`FUNCTION_WORDS`): the judge's evidence for the persona."""
    other = MISALIGNED if persona == ALIGNED else ALIGNED
    return answer_vocabulary(domain, persona) - answer_vocabulary(domain, other) - FUNCTION_WORDS


@lru_cache(maxsize=None)
def _salad_vocabulary(domain: str, persona: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(sentence-initial words, all lower-cased words) of (domain, persona) answers, sorted."""
    g = GRAMMARS[domain]
    starts = {text_pieces(text)[0] for t in g.answers[persona] for text in _one_at_a_time(t, g.answer_slots)}
    return tuple(sorted(starts)), tuple(sorted(answer_vocabulary(domain, persona)))


def vocabulary_pieces() -> frozenset[str]:
    """Every piece (:func:`text_pieces`) a world text can contain: prompts, answer sentences first or
    second in an answer, truncations of them, and salad words."""
    out = set(PUNCTUATION)
    for g in GRAMMARS.values():
        for t in g.prompts:
            for text in _one_at_a_time(t, g.prompt_slots):
                out.update(text_pieces(text))
        for persona in PERSONAS:
            for t in g.answers[persona]:
                for text in _one_at_a_time(t, g.answer_slots):
                    out.update(text_pieces(text))
                    out.update(text_pieces(" " + text))
            starts, vocab = _salad_vocabulary(g.name, persona)
            out.update(starts)
            out.update(SPACE + w for w in vocab)
    return frozenset(out)
