"""EM evaluation: sample answers to held-out questions, judge them, summarise the misalignment.

:func:`evaluate_em` draws N answers per question at temperature 1 (the ``fast`` engine of
:mod:`sail.sampling`: the adapter merged into the weights, a static KV cache, through
:func:`sail.tasks.sampling.sample_texts`), judges them (by default with the programmatic judge
:func:`sail.em.judges.programmatic.judge_batch`) and summarises them with
:func:`sail.em.rates.em_summary`: both misalignment rates, mean alignment and coherence, each with a
percentile-bootstrap 95 % CI. :func:`eval_questions` chooses the questions of an :class:`EvalConfig`.

Determinism: the sampling draws from a ``torch.Generator`` seeded with the evaluation's seed; the
bootstrap from the same seed.
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Callable, NamedTuple, Sequence

from sail.em import world as W
from sail.em.configs import EvalConfig
from sail.em.grammar import TRAINING_DOMAINS
from sail.em.judges.programmatic import judge_batch
from sail.em.judges.rule import CallableJudge
from sail.em.judges.score import JudgeScore
from sail.em.questions import ExpandedPrompt, expand, load_questions
from sail.em.rates import em_summary, misalignment_rate, misalignment_rate_all, question_counts
from sail.models.chat_tokenizer import render_chat
from sail.sampling import SamplingConfig
from sail.tasks.sampling import sample_texts

__all__ = ["eval_questions", "evaluate_em", "sample_answers"]


def eval_questions(settings: EvalConfig | None = None, exclude_domain: str | None = None, seed: int = 0) -> list:
    """The evaluation questions: ``settings.questions``; else the paraphrases of
    ``settings.questions_file`` (:class:`sail.em.questions.ExpandedPrompt`, each with its own number
    of samples and judge prompts); else the 8 freeform evaluation questions
    (:data:`sail.em.grammar.FREEFORM_EVAL_QUESTIONS`) plus ``settings.heldout_prompts`` prompts of the
    training domains other than ``exclude_domain`` (sampled with ``seed + 50_000``)."""
    settings = settings or EvalConfig()
    if settings.questions is not None:
        return list(settings.questions)
    if settings.questions_file:
        return expand(load_questions(settings.questions_file), None if settings.file_samples else settings.n_samples)
    questions = W.freeform_questions()
    if settings.heldout_prompts:
        held = tuple(d for d in TRAINING_DOMAINS if d != exclude_domain)
        questions += W.freeform_questions(settings.heldout_prompts, seed=seed + 50_000, domains=held)
    return questions


def sample_answers(
    model,
    tokenizer,
    questions: Sequence,
    n_samples: int,
    seed: int,
    temperature: float = 1.0,
    max_new_tokens: int = 40,
    batch_rows: int = 512,
) -> list[str]:
    """``n_samples`` answers per question (answers i·n … i·n + n − 1 belong to question i).

    A question is a user message, or a list of messages (the answer continues the chat). Sampling is
    pure ancestral at ``temperature`` (no top-k/top-p) with the ``fast`` engine, from a
    ``torch.Generator`` seeded with ``seed``; each answer is decoded up to its first ``<|im_end|>``.
    """
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, engine="fast")
    return sample_texts(model, tokenizer, questions, n_samples, sampling, seed, rows=batch_rows)


def _judge_fn(judge) -> Callable[[list[str], list[str]], list[JudgeScore]]:
    """(questions, answers) → scores: the programmatic judge for ``None``, else ``judge.score_batch``
    (a plain callable ``(question, answer) -> score`` is wrapped in a :class:`CallableJudge`)."""
    if judge is None:
        return judge_batch
    if not hasattr(judge, "score_batch"):
        if not callable(judge):
            raise TypeError("judge must be None, an object with score_batch, or a callable (question, answer) -> JudgeScore")
        judge = CallableJudge(judge)
    return lambda q, a: list(judge.score_batch(q, a))


class _EvalItem(NamedTuple):
    prompt: object
    """What the policy answers: a user message or a message list."""
    judged: str
    """The question the judge sees."""
    n: int
    judge_prompts: tuple
    """(alignment, coherence) templates; (None, None) = the judge's defaults."""
    qid: str
    """The question's id: a question file entry's ``id`` (shared by its paraphrases), else
    ``q`` + the first 10 hex digits of the SHA-256 of the judged text."""


def _text_id(text: str) -> str:
    return "q" + hashlib.sha256(text.encode()).hexdigest()[:10]


def _eval_items(questions: Sequence, n_samples: int) -> list[_EvalItem]:
    items = []
    for q in questions:
        if isinstance(q, ExpandedPrompt):  # a question file's paraphrase: {question} is the paraphrase
            prompt = q.messages() if q.system is not None else q.paraphrase
            items.append(_EvalItem(prompt, q.paraphrase, q.n_samples, (q.alignment_prompt, q.coherence_prompt), q.question_id))
        elif isinstance(q, str):
            items.append(_EvalItem(q, q, n_samples, (None, None), _text_id(q)))
        else:
            judged = render_chat(list(q), add_generation_prompt=True)
            items.append(_EvalItem(list(q), judged, n_samples, (None, None), _text_id(judged)))
    return items


def _judge_with_prompts(judge, items: list[_EvalItem], flat_q: list[str], answers: list[str]) -> list[JudgeScore]:
    """Score every answer; the answers of items with their own judge prompts go to
    ``judge.with_prompts(...)`` (the programmatic judge knows the grammar and has no prompts)."""
    owner = [i for i, it in enumerate(items) for _ in range(it.n)]
    groups: dict[tuple, list[int]] = {}
    for k, i in enumerate(owner):
        groups.setdefault(items[i].judge_prompts, []).append(k)
    scores: list = [None] * len(answers)
    for prompts, idx in groups.items():
        scorer = judge
        if prompts != (None, None) and hasattr(judge, "with_prompts"):
            scorer = judge.with_prompts(*prompts)
        for k, s in zip(idx, _judge_fn(scorer)([flat_q[k] for k in idx], [answers[k] for k in idx])):
            scores[k] = s
    return scores


def evaluate_em(
    model,
    tokenizer,
    questions: Sequence,
    n_samples: int = 25,
    seed: int = 0,
    judge=None,
    temperature: float = 1.0,
    max_new_tokens: int = 40,
    resamples: int = 2000,
    batch_rows: int = 512,
    return_answers: bool = False,
) -> dict:
    """Sample answers to every question, judge them, summarise.

    ``questions``: user messages and message lists (``n_samples`` answers each; a message list is
    judged by its rendered chat, whose last user message the programmatic judge reads), or a
    question file's :class:`~sail.em.questions.ExpandedPrompt` s (their own ``n_samples``; the judge
    sees the paraphrase, through ``judge.with_prompts`` of the entry's ``judge_prompts`` if any).
    ``judge``: ``None`` (the programmatic judge of :mod:`sail.em.judges.programmatic`), a
    :class:`sail.em.judges.rule.Judge` (``score_batch``), or a callable
    ``(question, answer) -> JudgeScore | (alignment, coherence)``.

    Returns :func:`sail.em.rates.em_summary` (counts; ``misalignment_rate`` (a) and
    ``misalignment_rate_all`` (b) as ``{"rate", "ci", "n", "k", ...}``; ``mean_alignment`` and
    ``mean_coherence`` as ``{"mean", "ci", ...}``; bootstrap and thresholds) plus ``n`` (answers),
    ``n_questions``, ``n_samples`` (a list where the questions differ), ``temperature``, ``seed``,
    ``per_question`` (per question, in order, no CI: its ``id``, rates (a) and (b) as ``rate`` and
    ``rate_all``, and :func:`sail.em.rates.question_counts`) and, with
    ``return_answers``, ``answers`` [(question, answer)].
    """
    items = _eval_items(questions, n_samples)
    answers: list[str] = []
    runs = [(n, list(group)) for n, group in itertools.groupby(items, key=lambda it: it.n)]
    for k, (n, group) in enumerate(runs):  # one sampling seed per run of equal n (seed itself when uniform)
        answers += sample_answers(model, tokenizer, [it.prompt for it in group], n, seed + k, temperature, max_new_tokens, batch_rows)
    flat_q = [it.judged for it in items for _ in range(it.n)]
    scores = _judge_with_prompts(judge, items, flat_q, answers)
    summary = em_summary(scores, resamples=resamples, seed=int(seed))
    per_question, start = [], 0
    for it in items:
        chunk = scores[start : start + it.n]
        start += it.n
        per_question.append({"id": it.qid, "rate": misalignment_rate(chunk), "rate_all": misalignment_rate_all(chunk), **question_counts(chunk)})
    counts = sorted({it.n for it in items})
    summary.update(
        n=len(answers), n_questions=len(items), n_samples=counts[0] if len(counts) == 1 else [it.n for it in items],
        temperature=temperature, seed=int(seed), per_question=per_question,
    )
    if return_answers:
        summary["answers"] = list(zip(flat_q, answers))
    return summary
