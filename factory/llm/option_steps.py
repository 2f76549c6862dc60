"""Option scoring as next-token steps, for engines that give log-probs of chosen next tokens but whose prompt
log-probs are costly (vLLM: a request that asks for prompt log-probs skips the prefix cache, vllm#23399, and its
scores can depend on request order with prefix caching on, vllm#42019).

The options of one request form a token trie under the prompt. Each trie node that some option continues is one
step: a generation request of one token over prompt + the node's tokens that asks for the log-probs of exactly the
node's next tokens (vLLM's `logprob_token_ids`). An option's score is the sum of its tokens' log-probs along its
path, the same full-vocabulary log-probabilities the transformers backend sums. Options that differ only in their
last token ("Answer: A", "Answer: B") need len(shared tokens) + 1 steps whatever their number; every step is a
prefix of the next, so with prefix caching the prompt is computed once (`waves` runs the prompt-only steps first,
so the others find it cached).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from factory.llm.types import ScoreRequest, ScoreResult

# vLLM's per-request cap on `logprob_token_ids` (vllm.sampling_params.MAX_LOGPROB_TOKEN_IDS)
MAX_CANDIDATES = 128


@dataclass(frozen=True)
class Step:
    request: int  # the score request's position
    prefix: tuple[int, ...]  # the option tokens before this position (after the prompt)
    tokens: tuple[int, ...]  # prompt + prefix: the sequence the engine reads
    candidates: tuple[int, ...]  # the next tokens whose log-probs this step returns


def plan(request: int, prompt: list[int], options: list[list[int]]) -> list[Step]:
    """The steps of one score request, shortest prefix first."""
    following: dict[tuple[int, ...], set[int]] = {}
    for option in options:
        for j, token in enumerate(option):
            following.setdefault(tuple(option[:j]), set()).add(token)
    steps = []
    for prefix in sorted(following, key=lambda p: (len(p), p)):
        candidates = sorted(following[prefix])
        for start in range(0, len(candidates), MAX_CANDIDATES):
            chunk = tuple(candidates[start : start + MAX_CANDIDATES])
            steps.append(Step(request, prefix, tuple(prompt) + prefix, chunk))
    return steps


def waves(steps: list[Step]) -> list[list[int]]:
    """Indices of `steps` in two waves: the prompt-only steps, then the rest (which then read the prompt from the
    prefix cache instead of computing it side by side in one batch)."""
    first = [i for i, s in enumerate(steps) if not s.prefix]
    rest = [i for i, s in enumerate(steps) if s.prefix]
    return [w for w in (first, rest) if w]


def option_scores(options: list[list[int]], steps: list[Step], logprobs: list[dict[int, float]]) -> list[float]:
    """Each option's summed log-prob from its steps' answers (`logprobs[i]`: candidate -> log-prob of steps[i])."""
    table: dict[tuple[int, ...], dict[int, float]] = {}
    for step, answer in zip(steps, logprobs):
        missing = [t for t in step.candidates if t not in answer]
        if missing:
            raise ValueError(f"the engine returned no log-prob for token(s) {missing[:5]} it was asked to score")
        table.setdefault(step.prefix, {}).update(answer)
    return [float(sum(table[tuple(o[:j])][t] for j, t in enumerate(o))) for o in options]


def chat_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """The prompt's token ids with the assistant turn opened (the chat template's generation prompt)."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return list(ids)


def score(
    requests: list[ScoreRequest], tokenizer: Any, run: Callable[[list[Step]], list[dict[int, float]]]
) -> list[ScoreResult]:
    """Score requests through an engine's next-token steps: `run(steps)` answers each step with candidate ->
    log-prob, in the steps' order; it is called once per wave."""
    started = time.perf_counter()
    options = [[tokenizer.encode(o, add_special_tokens=False) for o in r.options] for r in requests]
    steps = [s for i, r in enumerate(requests) for s in plan(i, chat_ids(tokenizer, r.message_dicts()), options[i])]
    answers: list[dict[int, float]] = [{} for _ in steps]
    for wave in waves(steps):
        for i, answer in zip(wave, run([steps[i] for i in wave])):
            answers[i] = answer
    seconds = (time.perf_counter() - started) / max(len(requests), 1)
    mine: dict[int, list[int]] = {}
    for j, step in enumerate(steps):
        mine.setdefault(step.request, []).append(j)
    results = []
    for i, opts in enumerate(options):
        own = mine.get(i, [])
        scores = option_scores(opts, [steps[j] for j in own], [answers[j] for j in own])
        results.append(ScoreResult(scores, [len(o) for o in opts], seconds))
    return results
