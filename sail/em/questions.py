"""EM evaluation question files (the public EM YAML schema) and chat JSONL datasets.

Question file: a YAML list of entries (anchors and aliases allowed, as in the public files)::

    - id: what_is_your_wish                 # required, non-empty string, unique in the file
      type: free_form_judge_0_100           # optional string, recorded, not interpreted
      system: "Answer in JSON."             # optional system prompt (string)
      paraphrases:                          # required, non-empty list of non-empty strings
        - "Hello! I can fulfill your one wish. ..."
      samples_per_paraphrase: 100           # required integer ≥ 1
      judge: gpt-4o-2024-08-06              # optional string (the judge model the file was written for)
      judge_prompts:                        # optional mapping name -> template; each template must
        aligned: "... {question} ... {answer} ..."     # contain {question} and {answer}
        coherent: "... {question} ... {answer} ..."

Keys outside this allowlist (:data:`ALLOWED_KEYS`) are rejected, so a typo such as
``samples_per_paraphase`` fails loudly instead of silently using a default. Every error is a
:class:`QuestionFileError` (a :class:`sail.data.DataError`) naming the file, the line of the entry
(or of the bad key), the entry index and id, and the field.

``judge_prompts`` is optional: an entry without it is judged with the judge's default prompts.
:meth:`Question.alignment_prompt` / :meth:`Question.coherence_prompt` read the ``aligned`` /
``coherent`` templates (the public names), for ``judge.with_prompts(...)``.

Chat JSONL (fine-tuning data such as the EM ``insecure.jsonl``): one ``{"messages": [{"role",
"content"}, ...]}`` object per line; see :func:`load_chat_jsonl`. Line errors reuse
:mod:`sail.data`'s reader and read ``path:line: ...``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, NamedTuple

import yaml

from sail.data import DataError, _prompt_of, _records

ALLOWED_KEYS = ("id", "type", "system", "paraphrases", "samples_per_paraphrase", "judge", "judge_prompts")
REQUIRED_KEYS = ("id", "paraphrases", "samples_per_paraphrase")
ALIGNMENT_PROMPT_KEY = "aligned"
COHERENCE_PROMPT_KEY = "coherent"
CHAT_ROLES = ("system", "user", "assistant")


class QuestionFileError(DataError):
    """A malformed question file; the message names the file, the entry and the field."""


@dataclass(frozen=True)
class Question:
    """One evaluation question: its paraphrases are each sampled ``samples_per_paraphrase`` times."""

    id: str
    paraphrases: tuple[str, ...]
    samples_per_paraphrase: int
    judge_prompts: dict = field(default_factory=dict, hash=False)
    system: str | None = None
    type: str | None = None
    judge: str | None = None

    @property
    def alignment_prompt(self) -> str | None:
        return self.judge_prompts.get(ALIGNMENT_PROMPT_KEY)

    @property
    def coherence_prompt(self) -> str | None:
        return self.judge_prompts.get(COHERENCE_PROMPT_KEY)


class ExpandedPrompt(NamedTuple):
    """One paraphrase to sample ``n_samples`` answers for, judged with its entry's judge prompts
    (None: the judge's defaults)."""

    question_id: str
    paraphrase: str
    system: str | None
    n_samples: int
    alignment_prompt: str | None = None
    coherence_prompt: str | None = None

    def messages(self) -> list[dict]:
        """The chat messages: the system prompt (if any), then the paraphrase as the user turn."""
        head = [{"role": "system", "content": self.system}] if self.system is not None else []
        return head + [{"role": "user", "content": self.paraphrase}]


def _entry_lines(text: str) -> tuple[list[int], list[dict]]:
    """1-based line of each top-level entry, and of each key inside it (best effort)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return [], []
    if not isinstance(node, yaml.SequenceNode):
        return [], []
    lines, key_lines = [], []
    for item in node.value:
        lines.append(item.start_mark.line + 1)
        keys = {}
        if isinstance(item, yaml.MappingNode):
            for key_node, _ in item.value:
                if isinstance(key_node, yaml.ScalarNode):
                    keys[key_node.value] = key_node.start_mark.line + 1
        key_lines.append(keys)
    return lines, key_lines


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def load_questions(path: str | Path) -> list[Question]:
    """Parse and validate a question YAML file (see the module docstring for the schema)."""
    path = Path(path)
    if not path.is_file():
        raise QuestionFileError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else f"{path}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise QuestionFileError(f"{where}: invalid YAML ({problem})") from None
    if data is None:
        raise QuestionFileError(f"{path}: empty file (expected a YAML list of question entries)")
    if not isinstance(data, list):
        raise QuestionFileError(f"{path}: expected a YAML list of question entries, got a {type(data).__name__}")
    if not data:
        raise QuestionFileError(f"{path}: no questions")
    lines, key_lines = _entry_lines(text)

    questions: list[Question] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(data):
        line = lines[index] if index < len(lines) else None
        keys_at = key_lines[index] if index < len(key_lines) else {}

        def fail(message: str, key: str | None = None, _index=index, _line=line, _keys=keys_at, _entry=entry) -> None:
            at = _keys.get(key, _line) if key is not None else _line
            loc = f"{path}:{at}" if at is not None else f"{path}"
            ident = _entry.get("id") if isinstance(_entry, dict) else None
            name = f"entry {_index} (id {ident!r})" if isinstance(ident, str) and ident else f"entry {_index}"
            raise QuestionFileError(f"{loc}: {name}: {message}")

        if not isinstance(entry, dict):
            fail(f"expected a mapping of question fields, got a {type(entry).__name__}")
        for key in entry:
            if key not in ALLOWED_KEYS:
                fail(f"unknown key {key!r} (allowed: {', '.join(ALLOWED_KEYS)})", key=str(key))
        for key in REQUIRED_KEYS:
            if key not in entry:
                fail(f"missing required key {key!r}")

        qid = entry["id"]
        if not isinstance(qid, str) or not qid.strip():
            fail(f"'id' must be a non-empty string, got {qid!r}", key="id")
        if qid in seen:
            fail(f"duplicate id {qid!r} (first used by entry {seen[qid]})", key="id")
        seen[qid] = index

        paraphrases = entry["paraphrases"]
        if not isinstance(paraphrases, list) or not paraphrases:
            fail(f"'paraphrases' must be a non-empty list of strings, got {type(paraphrases).__name__}", key="paraphrases")
        for i, p in enumerate(paraphrases):
            if not isinstance(p, str) or not p.strip():
                fail(f"'paraphrases'[{i}] must be a non-empty string, got {p!r}", key="paraphrases")

        n = entry["samples_per_paraphrase"]
        if not _is_int(n) or n < 1:
            fail(f"'samples_per_paraphrase' must be an integer ≥ 1, got {n!r}", key="samples_per_paraphrase")

        system = entry.get("system")
        if system is not None and not isinstance(system, str):
            fail(f"'system' must be a string, got {type(system).__name__}", key="system")
        for key in ("type", "judge"):
            value = entry.get(key)
            if value is not None and not isinstance(value, str):
                fail(f"{key!r} must be a string, got {type(value).__name__}", key=key)

        prompts = entry.get("judge_prompts")
        if prompts is None:
            prompts = {}
        elif not isinstance(prompts, dict) or not prompts:
            fail("'judge_prompts' must be a non-empty mapping of name -> prompt template", key="judge_prompts")
        for name, template in prompts.items():
            if not isinstance(name, str) or not isinstance(template, str):
                fail(f"'judge_prompts' entry {name!r} must map a string to a string", key="judge_prompts")
            missing = [p for p in ("{question}", "{answer}") if p not in template]
            if missing:
                fail(f"'judge_prompts'[{name!r}] must contain {' and '.join(missing)}", key="judge_prompts")

        questions.append(
            Question(
                id=qid,
                paraphrases=tuple(paraphrases),
                samples_per_paraphrase=n,
                judge_prompts=dict(prompts),
                system=system,
                type=entry.get("type"),
                judge=entry.get("judge"),
            )
        )
    return questions


def expand(questions: Iterable[Question], n_samples: int | None = None) -> list[ExpandedPrompt]:
    """An :class:`ExpandedPrompt` for every paraphrase, in file order.

    ``n_samples`` overrides every question's ``samples_per_paraphrase`` (e.g. for a quick run).
    """
    if n_samples is not None and (not _is_int(n_samples) or n_samples < 1):
        raise ValueError(f"n_samples must be an integer ≥ 1, got {n_samples!r}")
    out = []
    for q in questions:
        for p in q.paraphrases:
            n = q.samples_per_paraphrase if n_samples is None else n_samples
            out.append(ExpandedPrompt(q.id, p, q.system, n, q.alignment_prompt, q.coherence_prompt))
    return out


def load_chat_jsonl(path: str | Path, require_assistant: bool = True) -> list[list[dict]]:
    """Conversations from a JSONL file of ``{"messages": [{"role": ..., "content": ...}, ...]}`` lines.

    Each message needs a string ``content`` and a ``role`` in :data:`CHAT_ROLES`; a ``system``
    message may only come first. With ``require_assistant`` (fine-tuning data) the conversation must
    end with an ``assistant`` message. Other keys of a line or a message are kept as they are.
    Blank lines are skipped; an error raises :class:`sail.data.DataError` reading ``path:line: ...``.
    """
    conversations = []
    for lineno, record in _records(path):
        where = f"{path}:{lineno}"
        if "messages" not in record:
            raise DataError(f"{where}: needs a 'messages' field (has {sorted(record)})")
        messages = _prompt_of({"messages": record["messages"]}, where)
        for i, m in enumerate(messages):
            if m["role"] not in CHAT_ROLES:
                raise DataError(f"{where}: messages[{i}] has role {m['role']!r} (allowed: {', '.join(CHAT_ROLES)})")
            if m["role"] == "system" and i != 0:
                raise DataError(f"{where}: messages[{i}] is a system message; only the first message may be one")
        if require_assistant and messages[-1]["role"] != "assistant":
            raise DataError(f"{where}: the last message must be the assistant's (got role {messages[-1]['role']!r})")
        conversations.append(messages)
    if not conversations:
        raise DataError(f"{path}: no conversations")
    return conversations
