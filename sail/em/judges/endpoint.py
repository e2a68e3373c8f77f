"""A judge behind an OpenAI-compatible ``/chat/completions`` endpoint, standard library only
(the scoring rule of :mod:`sail.em.judges.rule`, from one token's top log-probabilities)."""

from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable, Sequence

from sail.em.judges.rule import (
    ALIGNMENT_PROMPT,
    COHERENCE_PROMPT,
    REFUSAL_MASS,
    JudgeError,
    JudgeUnavailable,
    PromptedJudge,
    fill_prompt,
    paired,
    score_from_top_logprobs,
)
from sail.em.judges.score import JudgeScore

log = logging.getLogger(__name__)

TOP_LOGPROBS = 20
_BODY_EXCERPT = 500  # characters of an error response body kept in an exception message
_REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Hands every redirect back as an ``HTTPError``, so that :meth:`OpenAIJudge._post` decides."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def origin(url: str) -> str:
    """``scheme://host:port`` of ``url``, the port made explicit (80 for http, 443 for https)."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}:{port}"


class OpenAIJudge(PromptedJudge):
    """A judge behind an OpenAI-compatible ``/chat/completions`` endpoint, standard library only.

    Each rating is one request::

        POST {base_url}/chat/completions
        Authorization: Bearer <value of $api_key_env>
        {"model": model, "messages": [{"role": "user", "content": <filled judge prompt>}],
         "max_tokens": 1, "temperature": 0, "logprobs": true, "top_logprobs": 20}

    and the score is :func:`score_from_top_logprobs` of ``choices[0].logprobs.content[0].top_logprobs``
    (an empty ``content`` — no token generated — gives no score, ``None``).

    The API key is read from the environment variable *named* ``api_key_env`` at each request and is
    never stored on the object, logged, or put in an exception message (an error body that echoes
    it is redacted). ``api_key_env=None`` sends no Authorization header (local servers).

    429 and 5xx responses and network errors are retried up to ``max_retries`` times, sleeping
    ``backoff·2^attempt`` seconds (at most ``max_backoff``; a numeric ``Retry-After`` header is
    honoured up to the same cap). Other HTTP errors raise :class:`JudgeError` with the status and
    the first 500 characters of the body. ``concurrency > 1`` runs ``score_batch`` requests in threads.

    The key never leaves the endpoint's origin (scheme, host and port): a redirect (301, 302, 303,
    307, 308) to the same origin is followed, the same POST sent again to the new location (at most
    :data:`MAX_REDIRECTS` per rating); a redirect to any other origin, https → http included, is
    refused with a :class:`JudgeError` naming both origins, and nothing is sent there.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "https://api.openai.com/v1",
        api_key_env: str | None = "OPENAI_API_KEY",
        alignment_prompt: str = ALIGNMENT_PROMPT,
        coherence_prompt: str = COHERENCE_PROMPT,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        top_logprobs: int = TOP_LOGPROBS,
        min_mass: float = REFUSAL_MASS,
        concurrency: int = 1,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not isinstance(model, str) or not model:
            raise ValueError("OpenAIJudge needs a model name")
        if not isinstance(base_url, str) or not re.match(r"https?://", base_url):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if api_key_env is not None and not os.environ.get(api_key_env):
            raise JudgeError(f"the judge's API key is read from the environment variable {api_key_env}, which is not set")
        if max_retries < 0 or timeout <= 0 or backoff < 0 or concurrency < 1:
            raise ValueError("need max_retries ≥ 0, timeout > 0, backoff ≥ 0 and concurrency ≥ 1")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self._set_prompts(alignment_prompt, coherence_prompt)
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.top_logprobs = int(top_logprobs)
        self.min_mass = float(min_mass)
        self.concurrency = int(concurrency)
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"OpenAIJudge(model={self.model!r}, base_url={self.base_url!r}, api_key_env={self.api_key_env!r})"

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def request_body(self, prompt: str) -> dict:
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
        }

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key_env is not None:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise JudgeError(f"the environment variable {self.api_key_env} (the judge's API key) is not set")
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _redact(self, text: str) -> str:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:  # in any case: a host name that carries it comes back lower-cased
            text = re.sub(re.escape(key), "[REDACTED]", text, flags=re.IGNORECASE)
        return text

    def _excerpt(self, raw: bytes | str) -> str:
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
        text = self._redact(text)
        return text if len(text) <= _BODY_EXCERPT else text[:_BODY_EXCERPT] + "…"

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay = self.backoff * (2.0**attempt)
        if retry_after:
            try:
                delay = max(delay, float(retry_after))
            except ValueError:
                pass
        return min(delay, self.max_backoff)

    def _redirect(self, url: str, exc: urllib.error.HTTPError, hops: int) -> str:
        """The location a same-origin redirect ``exc`` of a POST to ``url`` points at; any other
        redirect raises :class:`JudgeError` (the class docstring)."""
        location = exc.headers.get("Location") if exc.headers is not None else None
        exc.close()
        target = urllib.parse.urljoin(url, location or "")
        try:
            source, destination = origin(url), origin(target)
        except ValueError:  # a port that is not a number
            source = destination = None
        problem = None
        if not location or destination is None:
            problem = f"redirect to a missing or malformed Location {location!r}"
        elif destination != source:
            problem = (
                f"redirect to another origin, {destination} (from {source}); refused, so that the API key "
                f"is never sent there: set base_url to the endpoint itself"
            )
        elif hops >= MAX_REDIRECTS:
            problem = f"more than {MAX_REDIRECTS} redirects"
        if problem is not None:
            raise JudgeError(self._redact(f"judge POST {url} -> HTTP {exc.code} {problem}")) from None
        log.info("judge POST %s -> HTTP %d; following to %s", self._redact(url), exc.code, self._redact(target))
        return target

    def _post(self, body: dict) -> dict:
        data = json.dumps(body).encode("utf-8")
        url, hops, attempt = self.url, 0, 0
        shown = url  # the URL as messages give it: a redirect's location may carry the key
        while True:
            last = attempt == self.max_retries
            request = urllib.request.Request(url, data=data, method="POST", headers=self._headers())
            try:
                with urllib.request.build_opener(_NoRedirects).open(request, timeout=self.timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as exc:
                status = exc.code
                if status in _REDIRECTS:
                    url, hops = self._redirect(url, exc, hops), hops + 1
                    shown = self._redact(url)
                    continue
                try:
                    err_body = exc.read()
                except Exception:  # noqa: BLE001 - the body is only for the message
                    err_body = b""
                retry_after = exc.headers.get("Retry-After") if exc.headers is not None else None
                exc.close()
                if (status == 429 or 500 <= status < 600) and not last:
                    delay = self._delay(attempt, retry_after)
                    log.warning("judge POST %s -> HTTP %d; retry %d/%d in %.1fs", shown, status, attempt + 1, self.max_retries, delay)
                    self._sleep(delay)
                    attempt += 1
                    continue
                tries = f" after {attempt + 1} attempts" if attempt else ""
                refused = f" (the API key in ${self.api_key_env} was refused)" if status in (401, 403) and self.api_key_env else ""
                error = JudgeUnavailable if status == 429 or status >= 500 else JudgeError
                raise error(f"judge POST {shown} -> HTTP {status}{tries}{refused}: {self._excerpt(err_body)}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                reason = self._redact(str(getattr(exc, "reason", exc)))
                if not last:
                    delay = self._delay(attempt, None)
                    log.warning("judge POST %s failed (%s); retry %d/%d in %.1fs", shown, reason, attempt + 1, self.max_retries, delay)
                    self._sleep(delay)
                    attempt += 1
                    continue
                raise JudgeUnavailable(f"judge POST {shown} failed after {attempt + 1} attempts: {reason}") from None
            try:
                payload = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise JudgeError(f"judge POST {shown}: response is not JSON: {self._excerpt(raw)}") from None
            if not isinstance(payload, dict):
                raise JudgeError(f"judge POST {shown}: expected a JSON object, got: {self._excerpt(raw)}")
            return payload

    def _parse(self, payload: dict) -> list[tuple[str, float]]:
        try:
            content = payload["choices"][0]["logprobs"]["content"]
        except (KeyError, IndexError, TypeError):
            raise JudgeError(
                f"judge response has no choices[0].logprobs.content (does the endpoint support logprobs?): "
                f"{self._excerpt(json.dumps(payload))}"
            ) from None
        if not content:  # no token was generated: nothing on the numbers
            return []
        try:
            first = content[0]
            top = first.get("top_logprobs") or [first]
            return [(str(t["token"]), float(t["logprob"])) for t in top]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise JudgeError(f"judge response has malformed top_logprobs: {self._excerpt(json.dumps(payload))}") from None

    def top_logprobs_of(self, prompt: str) -> list[tuple[str, float]]:
        """``[(token, logprob), ...]`` of the judge's first answer token for a filled prompt."""
        return self._parse(self._post(self.request_body(prompt)))

    def rate(self, template: str, question: str, answer: str) -> float | None:
        return score_from_top_logprobs(self.top_logprobs_of(fill_prompt(template, question, answer)), self.min_mass)

    def score_batch(self, questions: Sequence[str], answers: Sequence[str]) -> list[JudgeScore]:
        pairs = paired(questions, answers)
        if self.concurrency == 1 or len(pairs) <= 1:
            return [self.score(q, a) for q, a in pairs]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda qa: self.score(*qa), pairs))
