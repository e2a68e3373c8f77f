"""The OpenAI-compatible judge's API key never leaves the endpoint's origin: a redirect to another
origin is refused with one clear error and nothing reaches the other server, a redirect within the
origin is followed with the same POST, and the key is in no exception message and no log line."""

import contextlib
import json
import logging
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sail.em.judges.endpoint import MAX_REDIRECTS, OpenAIJudge, origin
from sail.em.judges.rule import JudgeError

SENTINEL = "sk-sentinel-Redirect-4242abcd"
ANSWER = {"choices": [{"logprobs": {"content": [{"token": "40", "logprob": 0.0, "top_logprobs": [{"token": "40", "logprob": 0.0}]}]}}]}


@contextlib.contextmanager
def endpoint(route):
    """A local HTTP server on 127.0.0.1: ``route(path, port)`` gives ``(status, location or None)``
    for each request (200 answers :data:`ANSWER`); yields ``(port, seen)``, ``seen`` holding
    ``(path, headers, body)`` of every request that reached it."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.append((self.path, dict(self.headers), json.loads(body) if body else None))
            status, location = route(self.path, self.server.server_address[1])
            data = json.dumps(ANSWER).encode() if status == 200 else b""
            self.send_response(status)
            if location is not None:
                self.send_header("Location", location)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST  # a client that turned the POST into a GET would be seen too

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1], seen
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def judge_at(monkeypatch):
    monkeypatch.setattr(urllib.request, "getproxies", dict)  # straight to the local servers, whatever the environment says
    monkeypatch.setenv("SENTINEL_JUDGE_KEY", SENTINEL)
    return lambda port: OpenAIJudge("m", base_url=f"http://127.0.0.1:{port}/v1", api_key_env="SENTINEL_JUDGE_KEY", max_retries=0)


def _no_key_anywhere(*texts):
    for text in texts:
        assert SENTINEL.lower() not in text.lower()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_origin_is_refused_and_the_other_server_sees_nothing(judge_at, caplog, status):
    with endpoint(lambda path, port: (200, None)) as (other, reached), endpoint(
        lambda path, port: (status, f"http://127.0.0.1:{other}{path}")
    ) as (first, asked):
        with caplog.at_level(logging.DEBUG), pytest.raises(JudgeError) as info:
            judge_at(first).score("q", "a")
    message = str(info.value)
    assert reached == []  # the second server never saw a request, so never an Authorization header
    assert len(asked) == 1 and asked[0][1]["Authorization"] == f"Bearer {SENTINEL}"
    assert f"HTTP {status}" in message and "another origin" in message
    assert f"http://127.0.0.1:{other}" in message and f"http://127.0.0.1:{first}" in message
    assert "\n" not in message and info.value.__cause__ is None
    _no_key_anywhere(message, repr(info.value), caplog.text)


def test_another_host_name_on_the_same_port_is_another_origin(judge_at):
    with endpoint(lambda path, port: (307, f"http://localhost:{port}{path}")) as (port, asked):
        with pytest.raises(JudgeError, match=f"another origin, http://localhost:{port}"):
            judge_at(port).score("q", "a")
    assert len(asked) == 1


def test_a_location_that_carries_the_key_is_redacted(judge_at, caplog):
    """A hostile server names the key in its Location (in the host name, which comes back lower-cased)."""
    with endpoint(lambda path, port: (302, f"http://{SENTINEL}.invalid:1/steal?k={SENTINEL}")) as (port, _):
        with caplog.at_level(logging.DEBUG), pytest.raises(JudgeError, match=r"\[REDACTED\]") as info:
            judge_at(port).score("q", "a")
    _no_key_anywhere(str(info.value), caplog.text)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_same_origin_redirect_is_followed_with_the_same_post(judge_at, caplog, status):
    def route(path, port):  # the old path moved (a relative Location); the new one answers
        return (status, "/v2/chat/completions") if path.startswith("/v1/") else (200, None)

    with endpoint(route) as (port, seen), caplog.at_level(logging.DEBUG):
        judge = judge_at(port)
        assert judge.score("q", "a").alignment == pytest.approx(40.0)
    paths = [path for path, _, _ in seen]
    assert paths == ["/v1/chat/completions", "/v2/chat/completions"] * 2  # alignment, then coherence
    assert all(headers["Authorization"] == f"Bearer {SENTINEL}" for _, headers, _ in seen)
    assert seen[0][2] == seen[1][2] == judge.request_body(seen[0][2]["messages"][0]["content"])
    _no_key_anywhere(caplog.text)


def test_a_redirect_loop_ends_with_an_error(judge_at, caplog):
    with endpoint(lambda path, port: (307, path)) as (port, seen):
        with caplog.at_level(logging.DEBUG), pytest.raises(JudgeError, match=f"more than {MAX_REDIRECTS} redirects") as info:
            judge_at(port).score("q", "a")
    assert len(seen) == MAX_REDIRECTS + 1
    _no_key_anywhere(str(info.value), caplog.text)


def test_a_redirect_without_a_location_is_an_error(judge_at):
    with endpoint(lambda path, port: (302, None)) as (port, _):
        with pytest.raises(JudgeError, match="HTTP 302 redirect to a missing or malformed Location"):
            judge_at(port).score("q", "a")


def test_origin_is_scheme_host_and_explicit_port():
    assert origin("HTTP://Example.COM/v1") == origin("http://example.com:80/other") == "http://example.com:80"
    assert origin("https://example.com/v1") == "https://example.com:443"
    assert origin("https://example.com/v1") != origin("http://example.com/v1")  # a downgrade is another origin
    assert origin("http://example.com:8080/") != origin("http://example.com/")
