"""The `transformers` backend: chat generation on CPU or GPU with continuous batching, grammar-constrained with
xgrammar, and choice scoring that reuses the shared prompt's KV cache.

Generation is an explicit decode loop (`factory.llm.decode`) rather than `model.generate`, because every request
carries its own seed (a `torch.Generator` per row, so a request's tokens do not depend on which other requests share
its steps, up to floating-point effects of the batch's shape) and its own grammar matcher (JSON schema or fixed
choices), whose token bitmask is applied to that row's logits before sampling, and because a finished row's slot
takes the next request at once (including follow-ups such as retries and next turns) instead of idling until the
batch's longest answer ends.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import torch

from factory.llm import decode
from factory.llm.decode import Decoder
from factory.llm.option_steps import chat_ids
from factory.llm.types import (
    Constraint,
    Follow,
    GenerationRequest,
    GenerationResult,
    ScoreRequest,
    ScoreResult,
    in_rounds,
)


def weights_dtype(dtype: str, device: str) -> Any:
    """The dtype weights load in: as named, or for `auto` bfloat16 on a GPU (half the memory and the tensor cores'
    format) and the checkpoint's own dtype elsewhere (on CPU the embedded model is float32)."""
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else "auto"
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


class TransformersBackend:
    name = "transformers"

    def __init__(
        self,
        model_path: str,
        revision: str | None = None,
        dtype: str = "auto",
        device: str | None = None,
        batch_size: int = 8,
        model_id: str | None = None,
        jump_forward: bool = True,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the runner draws its own progress

        self.model_id = model_id or model_path
        self.revision = revision
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = weights_dtype(dtype, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, revision=revision)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, revision=revision, dtype=torch_dtype)
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        self.context = getattr(self.model.config, "max_position_embeddings", None)  # longest sequence it can score
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.eos_ids = self._eos_ids()
        if getattr(self.model, "_supports_attention_backend", False):
            self.model.set_attn_implementation(decode.ATTENTION)  # grouped-query attention without copies on CPU
        self.slots = decode.supports_slots(self.model)  # continuous batching; else static batches
        self._grammar = None
        self._compiled: dict[Constraint, Any] = {}
        self.jump_forward = jump_forward  # feed the text a grammar forces in one pass (`decode.forced_tokens`)
        self._forced: dict[str, list[int]] = {}  # text a grammar forces -> its tokens

    def close(self) -> None:
        """Drop the weights and compiled grammars (`factory.llm.backend.release`); unusable afterwards."""
        self.model = None
        self._compiled.clear()
        self._grammar = None

    def _eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        gen = getattr(self.model, "generation_config", None)
        extra = getattr(gen, "eos_token_id", None)
        if isinstance(extra, int):
            ids.add(extra)
        elif isinstance(extra, list):
            ids.update(extra)
        return {i for i in ids if i is not None}

    # --- prompts -------------------------------------------------------------------------------------------
    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        return chat_ids(self.tokenizer, messages)

    # --- constraints ---------------------------------------------------------------------------------------
    def _compiler(self):
        if self._grammar is None:
            import xgrammar as xgr

            info = xgr.TokenizerInfo.from_huggingface(
                self.tokenizer, vocab_size=self.model.config.vocab_size, stop_token_ids=sorted(self.eos_ids)
            )
            self._grammar = (xgr, info, xgr.GrammarCompiler(info))
        return self._grammar

    def _matcher(self, constraint: Constraint | None):
        if constraint is None:
            return None
        xgr, _, compiler = self._compiler()
        if constraint not in self._compiled:
            if constraint.json_schema is not None:
                self._compiled[constraint] = compiler.compile_json_schema(constraint.json_schema, any_whitespace=False)
            else:
                alternatives = " | ".join(json.dumps(c) for c in constraint.choices or ())
                self._compiled[constraint] = compiler.compile_grammar(f"root ::= {alternatives}")
        return xgr.GrammarMatcher(self._compiled[constraint])

    # --- generation ----------------------------------------------------------------------------------------
    def generate(self, requests: list[GenerationRequest], follow: Follow | None = None) -> list[GenerationResult]:
        """Continuous batching (`factory.llm.decode`) where the model allows it; otherwise static batches of
        `batch_size`, with follow-up requests run in rounds."""
        if self.slots:
            return Decoder(self, requests, follow).run()
        return in_rounds(self._static, requests, follow)

    def _static(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        results: list[GenerationResult] = []
        for start in range(0, len(requests), self.batch_size):
            results += self._generate_batch(requests[start : start + self.batch_size])
        return results

    @torch.inference_mode()
    def _generate_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """One left-padded batch decoded until its last row finishes (finished rows leave the batch): the path for
        models the slot decoder cannot serve (sliding-window or non-attention layers). Tokens a grammar forces are
        fed one per step, so a row's tokens are those the slot decoder gives it."""
        started = time.perf_counter()
        prompts = [self.prompt_ids(r.message_dicts()) for r in requests]
        n = len(requests)
        longest = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((n, longest), pad, dtype=torch.long)
        mask = torch.zeros((n, longest), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding
            ids[i, longest - len(p) :] = torch.tensor(p)
            mask[i, longest - len(p) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        rows = [decode.new_row(self, i, r, p) for i, (r, p) in enumerate(zip(requests, prompts))]
        bitmask = None
        if any(r.matcher is not None for r in rows):
            xgr, info, _ = self._compiler()
            bitmask = xgr.allocate_token_bitmask(n, info.vocab_size)
        past = None
        step_ids, step_pos, attn = ids, positions, mask
        active = list(range(n))  # rows still generating, in the order they sit in the batch tensors
        while active:
            out = self.model(  # logits of the last position only: the prefill would otherwise hold n x L x vocab
                input_ids=step_ids,
                attention_mask=attn,
                position_ids=step_pos,
                past_key_values=past,
                use_cache=True,
                logits_to_keep=1,
            )
            past = out.past_key_values
            logits = out.logits[:, -1, :].float().cpu()
            if bitmask is not None:
                xgr, info, _ = self._compiler()
                sampling = [j for j, i in enumerate(active) if len(rows[i].pending) <= 1]  # forced rows do not sample
                constrained = [j for j in sampling if rows[active[j]].matcher is not None]
                for j in constrained:
                    rows[active[j]].matcher.fill_next_token_bitmask(bitmask, j)
                if constrained:
                    xgr.apply_token_bitmask_inplace(logits, bitmask, vocab_size=info.vocab_size, indices=constrained)
            next_tokens, keep = [], []
            for j, i in enumerate(active):
                row = rows[i]
                if row.pending:  # forced tokens are fed one per step here, without sampling
                    row.pending.pop(0)
                if not row.pending and decode.accept(self, row, decode.sample(logits[j], requests[i], row.generator)):
                    continue
                next_tokens.append(row.pending[0])
                keep.append(j)
            step_ids = torch.tensor(next_tokens, dtype=torch.long, device=self.device)[:, None]  # the kept rows'
            step_pos = step_pos[:, -1:] + 1
            attn = torch.cat([attn, torch.ones((len(active), 1), dtype=attn.dtype, device=self.device)], dim=1)
            if len(keep) < len(active):  # finished rows leave the batch: no more compute spent on them
                index = torch.tensor(keep, device=self.device, dtype=torch.long)
                past.batch_select_indices(index)
                step_pos, attn = step_pos[index], attn[index]
                active = [active[j] for j in keep]
        seconds = (time.perf_counter() - started) / n
        return [decode.result(self, row, seconds) for row in rows]

    # --- scoring -------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def score_choices(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """The log-probability of each option after its prompt.

        Most option sets differ only in their last token ("Answer: A", "Answer: B", ...): then one pass over the
        prompt and the options' shared tokens gives every option's score from the last position's logits. Those
        requests are batched (left padded), and consecutive requests that share a long token prefix (one
        person's persona asked several questions) run that prefix once and continue from copies of its KV
        cache. Other option sets get one pass over the prompt, then all options at once on copies of its cache.
        """
        results: list[ScoreResult | None] = [None] * len(requests)
        plans: list[_ScorePlan] = []
        for i, r in enumerate(requests):
            started = time.perf_counter()
            prompt = self.prompt_ids(r.message_dicts())
            options = [self.tokenizer.encode(o, add_special_tokens=False) for o in r.options]
            longest = len(prompt) + max((len(o) for o in options), default=0)
            if self.context and longest > self.context:  # this request fails alone; its neighbours are scored
                results[i] = ScoreResult.failed(f"{longest} tokens to score, longer than the model's {self.context}")
                continue
            shared = _common_prefix(options)
            if all(len(o) == len(shared) + 1 for o in options):
                plans.append(_ScorePlan(i, prompt + shared, len(prompt), [o[-1] for o in options]))
            else:
                results[i] = self._score_options(prompt, options, started)
        for group in _prefix_groups(plans, self.batch_size):
            for plan, result in zip(group, self._score_last_tokens(group)):
                results[plan.index] = result
        return results  # type: ignore[return-value]

    def _score_last_tokens(self, group: list[_ScorePlan]) -> list[ScoreResult]:
        """One forward pass for a group; each row needs the logits of its tokens after the prompt, and the last."""
        started = time.perf_counter()
        shared = len(_common_prefix([p.seq for p in group])) if len(group) > 1 else 0
        shared = min([shared, *(p.prompt_len - 1 for p in group)])  # every row keeps the positions it scores
        cache = None
        if shared >= _MIN_SHARED_PREFIX:
            prefix = torch.tensor(group[0].seq[:shared], device=self.device)[None]
            cache = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1).past_key_values
            cache.batch_repeat_interleave(len(group))
        else:
            shared = 0
        tails = [p.seq[shared:] for p in group]
        width = max(len(t) for t in tails)
        ids = torch.full((len(group), width), self.tokenizer.pad_token_id, dtype=torch.long, device=self.device)
        mask = torch.zeros((len(group), shared + width), dtype=torch.long, device=self.device)
        mask[:, :shared] = 1
        for row, tail in enumerate(tails):  # left padding: every row's last token is in the last column
            ids[row, width - len(tail) :] = torch.tensor(tail)
            mask[row, shared + width - len(tail) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
        keep = max(len(p.seq) - p.prompt_len + 1 for p in group)
        logits = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, logits_to_keep=keep
        ).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        seconds = (time.perf_counter() - started) / len(group)
        out = []
        for row, p in enumerate(group):
            after = p.seq[p.prompt_len :]  # the options' shared tokens
            first = keep - len(after) - 1  # the column whose logits predict the first of them
            shared_lp = sum(float(logprobs[row, first + j, t]) for j, t in enumerate(after))
            last = logprobs[row, -1, p.last_tokens]
            out.append(
                ScoreResult(
                    [shared_lp + float(v) for v in last],
                    [len(after) + 1] * len(p.last_tokens),
                    seconds,
                )
            )
        return out

    def _score_options(self, prompt: list[int], options: list[list[int]], started: float) -> ScoreResult:
        """One pass over the prompt, then all options at once on copies of its KV cache."""
        prefix = torch.tensor(prompt[:-1], device=self.device)[None]
        # the prefix only fills the KV cache: its logits (L x vocab, the lm_head over every position) are unused
        cache = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1).past_key_values
        k = len(options)
        longest = max(len(o) for o in options)
        cont = torch.full((k, 1 + longest), self.tokenizer.pad_token_id, dtype=torch.long, device=self.device)
        for i, o in enumerate(options):  # right padding: the prompt's last token, then the option
            cont[i, 0] = prompt[-1]
            cont[i, 1 : 1 + len(o)] = torch.tensor(o)
        cache.batch_repeat_interleave(k)
        attn = torch.ones((k, len(prompt) - 1 + 1 + longest), dtype=torch.long, device=self.device)
        positions = torch.arange(len(prompt) - 1, len(prompt) + longest, device=self.device)[None].expand(k, -1)
        logits = self.model(
            input_ids=cont, attention_mask=attn, position_ids=positions, past_key_values=cache, use_cache=True
        ).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        scores = []
        for i, o in enumerate(options):
            targets = torch.tensor(o, device=self.device)
            scores.append(float(logprobs[i, torch.arange(len(o)), targets].sum()))
        return ScoreResult(scores, [len(o) for o in options], time.perf_counter() - started)


# Below this many shared tokens a group runs as one left-padded batch with no prefix cache.
_MIN_SHARED_PREFIX = 32


@dataclass
class _ScorePlan:
    index: int  # the request's position
    seq: list[int]  # the prompt, then the tokens every option starts with
    prompt_len: int
    last_tokens: list[int]  # each option's one remaining token


def _common_prefix(seqs: list[list[int]]) -> list[int]:
    first = seqs[0]
    n = len(first)
    for s in seqs[1:]:
        n = min(n, len(s))
        for j in range(n):
            if s[j] != first[j]:
                n = j
                break
    return first[:n]


def _prefix_groups(plans: list[_ScorePlan], size: int) -> list[list[_ScorePlan]]:
    """Consecutive plans, at most `size` a group. A plan joins the group unless that would shorten the prefix the
    group shares (the next person's persona after one person's questions), or, when the group is a single plan,
    unless it shares more with the plan after it; then it starts a new group."""
    groups: list[list[_ScorePlan]] = []
    shared = 0  # the current group's common prefix length
    for i, plan in enumerate(plans):
        group = groups[-1] if groups else []
        if group and len(group) < size:
            with_plan = len(_common_prefix([group[0].seq, plan.seq]))
            ahead = len(_common_prefix([plan.seq, plans[i + 1].seq])) if i + 1 < len(plans) else 0
            joins = with_plan >= shared if len(group) > 1 else with_plan >= ahead
            if joins:
                shared = shared if len(group) > 1 else with_plan
                group.append(plan)
                continue
        groups.append([plan])
    return groups
