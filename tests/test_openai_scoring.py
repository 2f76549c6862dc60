"""The openai backend's logprob scoring and its answers cached as they arrive, against a loopback stub that answers
as vLLM's OpenAI-compatible server documents (`/v1/completions` with `logprob_token_ids` and
`return_tokens_as_token_ids`; `/v1/chat/completions`), driven by the real `openai` client. `transformers serve`
takes no token-id prompt and no log-probs: tests/test_openai_backend.py checks its one-line refusal."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import factory_subprocess
from http_stub import send_json

from factory.errors import FactoryError
from factory.llm.openai_backend import OpenAIBackend
from factory.llm.option_steps import chat_ids
from factory.llm.types import ScoreRequest


def toy_logprob(tokens: list[int], token: int) -> float:
    """The stub's next-token log-prob: a deterministic function of the sequence and the token."""
    return -((sum(tokens) * 31 + len(tokens) * 17 + token * 7) % 97) / 10 - 0.01


class VLLMStub(BaseHTTPRequestHandler):
    """vLLM's OpenAI-compatible answers. `gate` (set) lets chat requests through; while it is clear, requests past
    the first `answer_first` wait at the door."""

    mode = "vllm"  # or "no-logprobs": a server that ignores vLLM's extra parameters
    seen: list[dict] = []
    answered: list[str] = []
    answer_first = 10**9
    gate = threading.Event()
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        with VLLMStub.lock:
            VLLMStub.seen.append(body)
            position = len(VLLMStub.seen)
        if self.path.endswith("/completions") and "messages" not in body:
            return send_json(self, self._completion(body))
        if position > VLLMStub.answer_first:
            VLLMStub.gate.wait(60)
        question = body["messages"][-1]["content"]
        send_json(
            self,
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": f"re {question}"}}
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
            },
        )
        with VLLMStub.lock:
            VLLMStub.answered.append(question)

    def _completion(self, body: dict) -> dict:
        prompt, wanted = body["prompt"], body.get("logprob_token_ids") or []
        sampled = max(range(50), key=lambda t: toy_logprob(prompt, t))
        logprobs = None
        if VLLMStub.mode == "vllm":
            top = {f"token_id:{t}": toy_logprob(prompt, t) for t in [sampled, *wanted]}
            logprobs = {
                "text_offset": [0],
                "token_logprobs": [toy_logprob(prompt, sampled)],
                "tokens": [f"token_id:{sampled}"],
                "top_logprobs": [top],
            }
        return {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "text": "x", "logprobs": logprobs, "finish_reason": "length"}],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": 1, "total_tokens": len(prompt) + 1},
        }

    def log_message(self, *args):
        pass


@pytest.fixture
def stub():
    VLLMStub.mode, VLLMStub.seen, VLLMStub.answered, VLLMStub.answer_first = "vllm", [], [], 10**9
    VLLMStub.gate.set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), VLLMStub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    VLLMStub.gate.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    from tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tok") / "m", train_steps=0))


def questions(n: int) -> list[ScoreRequest]:
    options = ["Answer: A", "Answer: B", "yes, maybe", "no"]
    return [ScoreRequest.chat([{"role": "user", "content": f"q{i}"}], options[: 2 + i % 3]) for i in range(n)]


def test_logprob_scores_are_summed_token_logprobs_in_any_order(stub, tokenizer_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    backend = OpenAIBackend("served", stub, api_key_env=None, concurrency=3, tokenizer=tokenizer_path)
    requests = questions(6)
    results = backend.score_choices(requests)
    for request, result in zip(requests, results):
        prompt = chat_ids(tok, request.message_dicts())
        for option, score in zip(request.options, result.logprobs):
            ids = tok.encode(option, add_special_tokens=False)
            assert score == pytest.approx(sum(toy_logprob(prompt + ids[:j], t) for j, t in enumerate(ids)))
    assert all("prompt_logprobs" not in body and body["max_tokens"] == 1 for body in VLLMStub.seen)
    shuffled = requests[:]
    random.Random(1).shuffle(shuffled)
    again = dict(zip(shuffled, backend.score_choices(shuffled)))
    assert [again[r].logprobs for r in requests] == [r.logprobs for r in results]


def test_a_server_that_cannot_score_fails_in_one_line(stub, tokenizer_path):
    VLLMStub.mode = "no-logprobs"
    backend = OpenAIBackend("served", stub, api_key_env=None, tokenizer=tokenizer_path)
    with pytest.raises(FactoryError, match=r"cannot score options: no log-probs by token id") as err:
        backend.score_choices(questions(2))
    assert "\n" not in str(err.value)
    missing = OpenAIBackend("served", stub, api_key_env=None, tokenizer=str(stub) + "/no-such-tokenizer")
    with pytest.raises(FactoryError, match=r"needs the served model's tokenizer.*set the backend's `tokenizer`"):
        missing.score_choices(questions(1))


RECIPE = """\
name: killed
seed: 0
backends:
  api: {{type: openai, model: served, base_url: "{url}", api_key_env: null, concurrency: 2, max_retries: 0}}
stages:
  asked: {{uses: "toy_stages:ask", backend: api, n: 24}}
"""


def test_a_killed_build_repeats_no_finished_request(stub, tmp_path):
    """The stub answers 8 requests, then holds the next ones open; the build is killed (SIGKILL, by PID) with
    requests in flight. The rerun sends the stub only what was never answered."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(url=stub))
    VLLMStub.answer_first = 8
    VLLMStub.gate.clear()
    proc = factory_subprocess("build", recipe, "--runs-dir", tmp_path / "runs", "--no-progress", background=True)
    try:
        deadline = time.time() + 120
        while len(VLLMStub.seen) < 10 and proc.poll() is None and time.time() < deadline:  # 8 answered, 2 held
            time.sleep(0.1)
        assert len(VLLMStub.answered) == 8, proc.stderr.read() if proc.poll() is not None else "stub not reached"
        time.sleep(1.0)  # the eighth answer reaches the cache
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    first = set(VLLMStub.answered)
    VLLMStub.seen, VLLMStub.answer_first = [], 10**9
    VLLMStub.gate.set()
    rerun = factory_subprocess("build", recipe, "--runs-dir", tmp_path / "runs", "--no-progress", timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    asked_again = [body["messages"][-1]["content"] for body in VLLMStub.seen]
    assert not first & set(asked_again) and len(asked_again) == 24 - 8


@pytest.mark.live
@pytest.mark.skipif(
    not (os.environ.get("FACTORY_VLLM_URL") and os.environ.get("FACTORY_VLLM_MODEL")),
    reason="set FACTORY_VLLM_URL (a `vllm serve` endpoint, .../v1) and FACTORY_VLLM_MODEL (its model id)",
)
def test_live_vllm_server_scores_options():
    """Against a real `vllm serve`: the letter options' probabilities are proper and the order does not matter."""
    url, model = os.environ["FACTORY_VLLM_URL"], os.environ["FACTORY_VLLM_MODEL"]
    backend = OpenAIBackend(model, url, api_key_env="FACTORY_VLLM_KEY")
    requests = [
        ScoreRequest.chat([{"role": "user", "content": f"Is {n} even? Reply 'Answer: A' (yes) or 'Answer: B' (no)."}],
                          ["Answer: A", "Answer: B"])
        for n in (2, 7, 10)
    ]
    first = backend.score_choices(requests)
    assert all(len(r.logprobs) == 2 and all(v < 0 for v in r.logprobs) for r in first)
    assert sum(math.exp(v) for v in first[0].logprobs) <= 1.0 + 1e-6
    again = backend.score_choices(requests[::-1])[::-1]
    assert [r.logprobs for r in again] == pytest.approx([r.logprobs for r in first], abs=1e-3)
