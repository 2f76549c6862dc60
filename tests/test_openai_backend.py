"""The openai backend against a real OpenAI-compatible server on 127.0.0.1 (`transformers serve` with the tiny
model), plus its retries and one-line errors against a flaky stub; the key never appears in results or errors."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from factory.errors import FactoryError
from factory.llm.openai_backend import OpenAIBackend, request_payload
from factory.llm.types import Constraint, GenerationRequest, Sampling

KEY = "sk-test-secret-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_path):
    model = tiny_path
    port = free_port()
    exe = Path(sys.executable).with_name("transformers")
    proc = subprocess.Popen(
        [str(exe), "serve", str(model), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail("transformers serve did not start")
            time.sleep(0.5)
    yield f"http://127.0.0.1:{port}/v1", str(model)
    proc.terminate()
    proc.wait(timeout=30)


def chat(text: str, **kw) -> GenerationRequest:
    return GenerationRequest.chat([{"role": "user", "content": text}], Sampling(**kw))


def test_generate_against_transformers_serve(server, monkeypatch):
    url, model = server
    monkeypatch.setenv("MY_KEY", KEY)
    backend = OpenAIBackend(model, url, api_key_env="MY_KEY", concurrency=3, timeout_s=60, max_retries=1)
    results = backend.generate([chat(f"hello {i}", max_tokens=8, seed=i) for i in range(5)])
    assert len(results) == 5
    for r in results:
        assert r.finish_reason in ("stop", "length") and r.completion_tokens <= 8 and r.prompt_tokens > 0
        assert KEY not in json.dumps(r.to_json())


def test_transformers_serve_cannot_score_and_says_so_in_one_line(server):
    """`transformers serve` takes no token-id prompt and ignores `logprobs` on /v1/completions."""
    from factory.llm.types import ScoreRequest

    url, model = server
    backend = OpenAIBackend(model, url, api_key_env=None, max_retries=0, tokenizer=model)
    with pytest.raises(FactoryError, match=r"cannot score options: HTTP 4\d\d .*need a vLLM server") as err:
        backend.score_choices([ScoreRequest.chat([{"role": "user", "content": "x"}], ["A", "B"])])
    assert "\n" not in str(err.value)


def test_payload_translation():
    req = GenerationRequest.chat(
        [{"role": "user", "content": "x"}], Sampling(0.5, 0.9, 20, ("\n",), 7), Constraint.schema({"type": "object"})
    )
    p = request_payload("m", req)
    assert p["response_format"]["json_schema"]["schema"] == {"type": "object"} and p["stop"] == ["\n"]
    assert p["seed"] == 7 * 1_000_003 % 2**31 and p["max_tokens"] == 20
    choice = request_payload(
        "m", GenerationRequest.chat([{"role": "user", "content": "x"}], constraint=Constraint.one_of(["A", "B"]))
    )
    assert choice["extra_body"] == {"structured_outputs": {"choice": ["A", "B"]}}


class Flaky(BaseHTTPRequestHandler):
    calls = 0
    auth: list[str] = []

    def do_POST(self):  # noqa: N802
        Flaky.calls += 1
        Flaky.auth.append(self.headers.get("Authorization", ""))
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if Flaky.calls % 2 == 1:  # every first try fails with a 503
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "busy"}}')
            return
        body = json.dumps(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_retries_with_backoff_and_one_line_errors(monkeypatch):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    monkeypatch.setenv("MY_KEY", KEY)
    try:
        backend = OpenAIBackend("m", url, api_key_env="MY_KEY", concurrency=1, timeout_s=5, max_retries=2)
        r = backend.generate([chat("x")])[0]
        assert r.text == "ok" and Flaky.calls == 2 and Flaky.auth[0] == f"Bearer {KEY}"
        no_retry = OpenAIBackend("m", url, api_key_env="MY_KEY", concurrency=1, timeout_s=5, max_retries=0)
        with pytest.raises(FactoryError) as info:
            no_retry.generate([chat("x")])
        assert "HTTP 503" in str(info.value) and KEY not in str(info.value) and "\n" not in str(info.value)
    finally:
        httpd.shutdown()
    dead = OpenAIBackend("m", f"http://127.0.0.1:{free_port()}/v1", api_key_env="MY_KEY", timeout_s=2, max_retries=0)
    with pytest.raises(FactoryError, match="APIConnectionError") as info:
        dead.generate([chat("x")])
    assert KEY not in str(info.value)
