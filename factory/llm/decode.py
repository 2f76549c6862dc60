"""Continuous batching for the transformers backend.

A fixed number of slots decode together. When a row finishes, its slot takes the next waiting request at the next
step, so batches stay full when answers differ in length, when retries and follow-up turns arrive in the middle of
a run (`follow`), and at the tail.

Keys and values live in a preallocated cache (`SlotCache`). Every forward pass writes its new column at `end` for
all slots and attends to the window [start, end] through a per-slot mask, so neither a step nor a join copies the
cache (a `DynamicCache` grows by concatenation and copies all of it every step). A joining request's prompt is
prefilled on its own (the joiners of one step together, left padded), and its keys and values are copied into its
slot so that the prompt ends at `end`. When the writes reach the end of the cache, the live columns move to its
front; the cache grows only if the live window needs more room.

On CPU, attention runs through `scaled_dot_product_attention` with `enable_gqa` (registered with transformers as
"factory_sdpa"). transformers' own sdpa path repeats the key/value heads whenever there is a mask, which on CPU
costs more than the attention itself. Other devices use transformers' sdpa unchanged.

Each request keeps its own `torch.Generator` (seeded from the request) and its own grammar matcher, so its tokens
do not depend on which requests share its steps, up to floating-point effects of the batch's shape. The schedule is
a function of the requests alone (never of timing), so the same requests give the same tokens on the same machine.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from factory.llm.backend import Follow
from factory.llm.types import GenerationRequest, GenerationResult

ATTENTION = "factory_sdpa"


def _attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    if query.device.type != "cpu" or kwargs.get("position_bias") is not None or query.shape[1] == key.shape[1]:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(query.shape[2] > 1 and attention_mask is None and causal)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, is_causal=causal, enable_gqa=True
    )
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION, _attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def supports_slots(model: Any, longest: int | None = None) -> bool:
    """Whether the slot decoder can serve this model: every layer is full attention through the attention interface
    (a sliding window only counts when a sequence can be longer than it)."""
    config = model.config
    if not getattr(model, "_supports_attention_backend", False):
        return False
    types = getattr(config, "layer_types", None)
    if types is not None and any(t != "full_attention" for t in types):
        return False
    window = getattr(config, "sliding_window", None)
    if window and getattr(config, "use_sliding_window", True) and (longest is None or longest > window):
        return False
    return True


class _SlotLayer(CacheLayerMixin):
    def __init__(self, owner: SlotCache, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self.owner, self.keys, self.values, self.is_initialized = owner, keys, values, True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        raise AssertionError("slot cache layers are allocated up front")

    def update(self, key_states, value_states, *args, **kwargs):
        start, end, t = self.owner.start, self.owner.end, key_states.shape[-2]
        self.keys[:, :, end : end + t] = key_states
        self.values[:, :, end : end + t] = value_states
        return self.keys[:, :, start : end + t], self.values[:, :, start : end + t]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.owner.end - self.owner.start + query_length, 0

    def get_seq_length(self) -> int:
        return self.owner.end - self.owner.start

    def get_max_length(self) -> int:
        return self.keys.shape[2]


class SlotCache(Cache):
    """Keys and values of `slots` rows in preallocated tensors [slots, kv_heads, capacity, head_dim] per layer."""

    def __init__(self, shapes: list[tuple[int, int, int]], slots: int, capacity: int, dtype, device):
        self.start = self.end = 0
        layers = [
            _SlotLayer(
                self,
                torch.zeros((slots, h, capacity, dk), dtype=dtype, device=device),
                torch.zeros((slots, h, capacity, dv), dtype=dtype, device=device),
            )
            for h, dk, dv in shapes
        ]
        super().__init__(layers=layers)

    @property
    def capacity(self) -> int:
        return self.layers[0].keys.shape[2]

    def remap(self, rows: torch.Tensor | None, slots: int, capacity: int, shift: int) -> None:
        """Rebuild with `slots` rows and `capacity` columns: old rows `rows` (all when None) become rows 0..k-1, and
        columns [shift, end) move to [0, end - shift)."""
        for layer in self.layers:
            for name in ("keys", "values"):
                old = getattr(layer, name)
                if rows is None and slots == old.shape[0] and capacity == old.shape[2]:
                    live = old[:, :, shift : self.end].clone()
                    old[:, :, : self.end - shift] = live
                    continue
                new = old.new_zeros((slots, old.shape[1], capacity, old.shape[3]))
                taken = old if rows is None else old[rows]
                new[: taken.shape[0], :, : self.end - shift] = taken[:, :, shift : self.end]
                setattr(layer, name, new)
        self.start, self.end = max(self.start - shift, 0), self.end - shift


@dataclass
class _Row:
    index: int
    request: GenerationRequest
    prompt: list[int]
    generator: torch.Generator
    matcher: Any
    admitted: float = field(default_factory=time.perf_counter)
    tokens: list[int] = field(default_factory=list)
    finish: str = "length"
    first: int = 0  # the cache column of its first prompt token
    position: int = 0  # the position id of its next input token
    next_input: int = 0

    @property
    def prompt_len(self) -> int:
        return len(self.prompt)


class Decoder:
    """One run of continuous batching over `requests` (and the follow-ups `follow` returns) with a backend's
    model, tokenizer, sampler and grammar matchers."""

    slack = 256  # spare cache columns past the longest row: the live window moves to the front at most this often
    min_reuse = 16  # shared prompt tokens worth reusing from a parent

    def __init__(self, backend: Any, requests: list[GenerationRequest], follow: Follow | None):
        self.b = backend
        self.requests = list(requests)
        self.follow = follow
        self.queue: deque[int] = deque(range(len(self.requests)))
        self.results: dict[int, GenerationResult] = {}
        self.rows: list[_Row | None] = []
        self.cache: SlotCache | None = None
        self.valid: torch.Tensor | None = None  # [slots, capacity]: which columns each row attends to
        self.bitmask = None
        self.parents: dict[int, tuple[list[int], list]] = {}  # follow-up -> its parent's tokens, keys and values
        self.reused_tokens = 0  # prompt tokens whose keys and values came from a parent rather than a prefill

    # --- the run -------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def run(self) -> list[GenerationResult]:
        while self.queue or any(self.rows):
            free = [s for s, r in enumerate(self.rows) if r is None]
            if self.queue and len(self.rows) < self.b.batch_size and len(free) < len(self.queue):
                self._resize(min(self.b.batch_size, len(self.rows) - len(free) + len(self.queue)))
                free = [s for s, r in enumerate(self.rows) if r is None]
            if self.queue and free:
                self._admit([self.queue.popleft() for _ in range(min(len(free), len(self.queue)))], free)
            live = sum(r is not None for r in self.rows)
            if live and not self.queue and live <= len(self.rows) // 2:
                self._resize(live)  # the tail: finished rows leave rather than pad every step
            if live:
                self._step()
        return [self.results[i] for i in range(len(self.requests))]

    def _admit(self, indices: list[int], free: list[int]) -> None:
        """Prefill the joiners together and copy their keys and values into free slots so that every prompt ends
        at `end`; each one's first token comes from the prefill's last logits.

        A follow-up whose prompt starts with its parent's tokens (a retry has the same prompt, a conversation's next
        turn has the last turn and its reply) reuses the parent's keys and values for that prefix and prefills
        only the rest. The prefill batch is [reused parts, left padded | the rest, left padded]; in its slot each
        prompt is whole again, ending at `end`."""
        b = self.b
        prompts = [b.prompt_ids(self.requests[i].message_dicts()) for i in indices]
        rows = [new_row(b, i, self.requests[i], p) for i, p in zip(indices, prompts)]
        reused = [self._reusable(i, p) for i, p in zip(indices, prompts)]
        lengths = [0 if kv is None else kv[0][0].shape[1] for kv in reused]
        head = max(lengths)
        tails = [p[k:] for p, k in zip(prompts, lengths)]
        width = max(len(t) for t in tails)
        ids = torch.full((len(rows), width), b.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), head + width), dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        for j, (tail, k) in enumerate(zip(tails, lengths)):
            ids[j, width - len(tail) :] = torch.tensor(tail)
            mask[j, head - k : head] = 1
            mask[j, head + width - len(tail) :] = 1
            positions[j, width - len(tail) :] = torch.arange(k, k + len(tail))
        ids, mask, positions = ids.to(b.device), mask.to(b.device), positions.to(b.device)
        past = None
        if head:
            past = DynamicCache()
            for layer, kvs in enumerate(zip(*[kv or [None] * len(self.cache.layers) for kv in reused])):
                keys, values = self._stack(kvs, lengths, head)
                past.update(keys, values, layer)
        out = b.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=past, use_cache=True,
            logits_to_keep=1,
        )  # fmt: skip
        past = out.past_key_values
        block = max(len(p) for p in prompts)  # each prompt lands whole, reused part then the rest, ending at `end`
        longest = block + max(r.request.sampling.max_tokens for r in rows)
        if self.cache is None:
            self.rows = [None] * len(free)
            shapes = [(la.keys.shape[1], la.keys.shape[3], la.values.shape[3]) for la in past.layers]
            k = past.layers[0].keys
            self.cache = SlotCache(shapes, len(free), longest + self.slack, k.dtype, k.device)
            self.valid = torch.zeros((len(free), self.cache.capacity), dtype=torch.bool, device=b.device)
            self.cache.start = self.cache.end = block
        self._room(max(self.cache.end, block) + 1, longest)
        c = self.cache
        c.end = end = max(c.end, block)
        slots = free[: len(rows)]
        for mine, theirs in zip(c.layers, past.layers):
            for j, (s, k, tail) in enumerate(zip(slots, lengths, tails)):
                t = len(tail)
                for dst, src in ((mine.keys, theirs.keys), (mine.values, theirs.values)):
                    dst[s, :, end - t - k : end - t] = src[j, :, head - k : head]
                    dst[s, :, end - t : end] = src[j, :, head + width - t :]
        for s, row in zip(slots, rows):
            self.valid[s] = False
            self.valid[s, end - row.prompt_len : end] = True
            row.first, row.position = end - row.prompt_len, row.prompt_len
            self.rows[s] = row
        self.reused_tokens += sum(lengths)
        self._sample(out.logits[:, -1, :], list(zip(range(len(rows)), slots)))

    def _reusable(self, index: int, prompt: list[int]):
        """The parent's keys and values for the tokens this prompt shares with it (at least `min_reuse`, and
        never the whole prompt: its last token must run to give the first logits), or None."""
        parent = self.parents.pop(index, None)
        if parent is None:
            return None
        seq, kv = parent
        n = min(len(seq), len(prompt) - 1)
        shared = next((j for j in range(n) if seq[j] != prompt[j]), n)
        if shared < self.min_reuse:
            return None
        return [(k[:, :shared], v[:, :shared]) for k, v in kv]

    @staticmethod
    def _stack(kvs, lengths: list[int], head: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One layer's reused keys and values for the joiners, right aligned in `head` columns."""
        k0, v0 = next(kv for kv in kvs if kv is not None)
        keys = k0.new_zeros((len(kvs), k0.shape[0], head, k0.shape[2]))
        values = v0.new_zeros((len(kvs), v0.shape[0], head, v0.shape[2]))
        for j, (kv, k) in enumerate(zip(kvs, lengths)):
            if kv is not None:
                keys[j, :, head - k :], values[j, :, head - k :] = kv
        return keys, values

    def _step(self) -> None:
        b, c = self.b, self.cache
        self._room(c.end + 1, 0)
        live = [(s, r) for s, r in enumerate(self.rows) if r is not None]
        c.start = min(r.first for _, r in live)
        pad = b.tokenizer.pad_token_id
        ids = torch.tensor([[r.next_input if r else pad] for r in self.rows], device=b.device)
        positions = torch.tensor([[r.position if r else 0] for r in self.rows], device=b.device)
        self.valid[:, c.end] = True  # each row's new column (a finished row's too: no row attends to nothing)
        mask = self.valid[:, c.start : c.end + 1][:, None, None, :]
        out = b.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=c, use_cache=True,
            logits_to_keep=1,
        )  # fmt: skip
        c.end += 1
        for _, r in live:
            r.position += 1
        self._sample(out.logits[:, -1, :], [(s, s) for s, _ in live])

    def _sample(self, logits: torch.Tensor, at: list[tuple[int, int]]) -> None:
        """Sample the next token of slot s from logits row j, for each (j, s) in `at`; finished rows leave."""
        logits = logits.float().cpu()
        constrained = [(j, self.rows[s].matcher) for j, s in at if self.rows[s].matcher is not None]
        if constrained:
            xgr, info, _ = self.b._compiler()
            if self.bitmask is None or self.bitmask.shape[0] < logits.shape[0]:
                self.bitmask = xgr.allocate_token_bitmask(max(logits.shape[0], len(self.rows)), info.vocab_size)
            for j, matcher in constrained:
                matcher.fill_next_token_bitmask(self.bitmask, j)
            xgr.apply_token_bitmask_inplace(
                logits, self.bitmask[: logits.shape[0]], vocab_size=info.vocab_size,
                indices=[j for j, _ in constrained],
            )  # fmt: skip
        for j, s in at:
            row = self.rows[s]
            token = sample(logits[j], row.request, row.generator)
            if accept(self.b, row, token):
                self._finish(s)
            else:
                row.next_input = token

    def _finish(self, slot: int) -> None:
        row = self.rows[slot]
        self.rows[slot] = None
        self.results[row.index] = result(self.b, row, time.perf_counter() - row.admitted)
        more = self.follow(row.index, self.results[row.index]) if self.follow is not None else []
        if more:  # its follow-ups may start with its tokens: keep their keys and values until they join
            columns = self.valid[slot].nonzero().squeeze(-1)
            seq = (row.prompt + row.tokens)[: len(columns)]
            kv = [(la.keys[slot][:, columns], la.values[slot][:, columns]) for la in self.cache.layers]
        for request in more:
            self.parents[len(self.requests)] = (seq, kv)
            self.queue.append(len(self.requests))
            self.requests.append(request)
        self.valid[slot] = False

    # --- room in the cache ---------------------------------------------------------------------------------
    def _room(self, end: int, longest: int) -> None:
        """Make the cache hold writes up to column `end` (exclusive), compacting the live columns to the front and
        growing it when the live window still does not fit; `longest` is a joiner's prompt plus answer."""
        c = self.cache
        if end <= c.capacity:
            return
        live = [r.first for r in self.rows if r is not None]
        shift = min(live) if live else c.end
        need = end - shift
        capacity = c.capacity if need <= c.capacity else max(need, longest) + self.slack
        c.remap(None, len(self.rows), capacity, shift)
        self.valid = self._moved(self.valid, None, len(self.rows), capacity, shift, c.end + shift)
        for r in self.rows:
            if r is not None:
                r.first -= shift

    def _resize(self, slots: int) -> None:
        """Change the number of slots; live rows move to the first ones."""
        if self.cache is None:  # nothing admitted yet: the first admission allocates
            self.rows = [None] * slots
            return
        keep = [s for s, r in enumerate(self.rows) if r is not None]
        index = torch.tensor(keep, dtype=torch.long, device=self.b.device)
        end = self.cache.end
        self.cache.remap(index, slots, self.cache.capacity, 0)
        self.valid = self._moved(self.valid, index, slots, self.cache.capacity, 0, end)
        self.rows = [self.rows[s] for s in keep] + [None] * (slots - len(keep))

    @staticmethod
    def _moved(valid, rows, slots, capacity, shift, end) -> torch.Tensor:
        new = torch.zeros((slots, capacity), dtype=torch.bool, device=valid.device)
        taken = valid if rows is None else valid[rows]
        new[: taken.shape[0], : end - shift] = taken[:, shift:end]
        return new


# --- one row's tokens (shared with the static-batch loop) --------------------------------------------------
def new_row(backend: Any, index: int, request: GenerationRequest, prompt: list[int]) -> _Row:
    """A request's decoding state: its own generator, seeded from the request, and its own grammar matcher."""
    g = torch.Generator(device="cpu")
    g.manual_seed((request.sampling.seed * 1_000_003 + request.sample_index) % (2**63 - 1))
    return _Row(index, request, prompt, g, backend._matcher(request.constraint))


def accept(backend: Any, row: _Row, token: int) -> bool:
    """Take a sampled token; True when the row is finished (its `finish` says why)."""
    m = row.matcher
    if m is not None:
        m.accept_token(token)
    if token in backend.eos_ids or (m is not None and m.is_terminated()):
        row.finish = "stop"
        if token not in backend.eos_ids:
            row.tokens.append(token)
        return True
    row.tokens.append(token)
    stop = row.request.sampling.stop
    if len(row.tokens) >= row.request.sampling.max_tokens:
        return True
    if stop and any(s in backend.tokenizer.decode(row.tokens[-16:], skip_special_tokens=True) for s in stop):
        row.finish = "stop"
        return True
    return False


def result(backend: Any, row: _Row, seconds: float) -> GenerationResult:
    text = backend.tokenizer.decode(row.tokens, skip_special_tokens=True)
    stop = row.request.sampling.stop
    if stop and row.finish == "stop":
        cut = [text.find(s) for s in stop if s in text]
        if cut:
            text = text[: min(cut)]
    return GenerationResult(text, row.finish, row.prompt_len, len(row.tokens), seconds)


def sample(logits: torch.Tensor, request: GenerationRequest, generator: torch.Generator) -> int:
    """Temperature and nucleus sampling with the request's own generator.

    The nucleus is taken among the 256 most likely tokens (after the grammar mask), which nearly always hold top_p
    of the mass; when they do not, the full sorted distribution is used. A sort of the whole 50k vocabulary per row
    per step was a fifth of the decode time on CPU."""
    s = request.sampling
    if s.temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / s.temperature, dim=-1)
    k = min(256, probs.shape[-1])
    top_p, top_i = torch.topk(probs, k)
    if s.top_p < 1.0 and float(top_p.sum()) < s.top_p:
        top_p, top_i = torch.sort(probs, descending=True)
    if s.top_p < 1.0:
        keep = top_p.cumsum(-1) - top_p < s.top_p
        top_p = torch.where(keep, top_p, torch.zeros_like(top_p))
    elif k < probs.shape[-1]:  # plain temperature sampling over the whole vocabulary
        top_p, top_i = probs, torch.arange(probs.shape[-1])
    choice = torch.multinomial(top_p / top_p.sum(), 1, generator=generator)
    return int(top_i[choice])
