"""Continuous batching for the transformers backend, with the grammar's forced tokens taken in one pass.

A fixed number of slots decode together. When a row finishes, its slot takes the next waiting request at the next
step, so batches stay full when answers differ in length, when retries and follow-up turns arrive in the middle of
a run (`follow`), and at the tail.

Every forward pass is packed: the new tokens of all live rows form one sequence, each row contributing what it has
pending: one sampled token while it decodes, its whole prompt when it joins, and the sampled token followed by the
text its grammar forces ("jump-forward": after `{"AGE": 41, ` a JSON schema allows only `"SEX": "`). Those forced
tokens cost a share of one pass instead of a decode step each; a table persona is mostly forced keys, quotes and
enum tails. The linear layers see only real tokens, never padding. Forced text is tokenized the tokenizer's own
way, so the model reads JSON as it was trained on, not split into odd pieces the grammar happened to allow.

Keys and values live in a preallocated cache (`SlotCache`): slot s holds its row's sequence in columns
[0, length), and a pass writes each token at its own position. Attention (`_packed_attention`) gives each row's
last token one batched call over all slots with a per-slot mask, and each row's earlier new tokens (a prompt, forced
text) a causal call of their own over that row's columns, a view of the cache. A row that joins as the follow-up
of a finished one (a retry has the same prompt, a conversation's next turn starts with the last turn and its reply)
copies the keys and values of the prefix it shares with it and runs only the rest.

On CPU every call is `scaled_dot_product_attention` with `enable_gqa`: transformers' own sdpa path repeats the
key/value heads whenever there is a mask, which on CPU costs more than the attention itself. Outside the decoder
(scoring, the static fallback), "factory_sdpa" is transformers' sdpa with that one change on CPU.

Each request keeps its own `torch.Generator` (seeded from the request) and its own grammar matcher, so its tokens
do not depend on which requests share its steps, up to floating-point effects of the batch's shape. The schedule is
a function of the requests alone (never of timing), so the same requests give the same tokens on the same machine.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import AttentionInterface
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from factory.llm.types import Follow, GenerationRequest, GenerationResult

ATTENTION = "factory_sdpa"


def _attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    packed = kwargs.get("packed")
    if packed is not None:
        return _packed_attention(query, key, value, packed, scaling)
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


@dataclass
class _Packed:
    """One pass's layout: the new tokens of every live row, packed into one sequence."""

    slot: torch.Tensor  # [N] each token's slot
    column: torch.Tensor  # [N] its cache column, which is also its position
    last: torch.Tensor  # [live] the packed index of each live row's last token
    live: torch.Tensor  # [live] those rows' slots
    mask: torch.Tensor  # [slots, 1, 1, width]: the columns each slot's last token attends to
    runs: list[tuple[int, int, torch.Tensor]]  # (slot, packed index, causal mask [k, columns]) of earlier tokens


def _packed_attention(query, key, value, p: _Packed, scaling):
    """query [1, heads, N, dim] (the packed tokens); key, value [slots, kv_heads, capacity, dim] (the whole cache,
    already holding this pass's tokens). Returns [1, N, heads, dim]."""
    sdpa = torch.nn.functional.scaled_dot_product_attention
    q = query[0].to(key.dtype)
    heads, n, dim = q.shape
    width = p.mask.shape[-1]
    out = q.new_empty((n, heads, dim))
    last = q.new_zeros((key.shape[0], heads, 1, dim))  # idle slots ask with zeros and are not read
    last[p.live, :, 0] = q[:, p.last].transpose(0, 1)
    o = sdpa(last, key[:, :, :width], value[:, :, :width], attn_mask=p.mask, scale=scaling, enable_gqa=True)
    out[p.last] = o[p.live, :, 0]
    for s, i, mask in p.runs:
        k, columns = mask.shape[-2:]
        o = sdpa(
            q[None, :, i : i + k], key[s : s + 1, :, :columns], value[s : s + 1, :, :columns], attn_mask=mask,
            scale=scaling, enable_gqa=True,
        )  # fmt: skip
        out[i : i + k] = o[0].transpose(0, 1)
    return out[None].to(query.dtype), None


class _SlotLayer(CacheLayerMixin):
    def __init__(self, owner: SlotCache, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self.owner, self.keys, self.values, self.is_initialized = owner, keys, values, True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        raise AssertionError("slot cache layers are allocated up front")

    def update(self, key_states, value_states, *args, **kwargs):
        p = self.owner.packed
        self.keys[p.slot, :, p.column] = key_states[0].transpose(0, 1).to(self.keys.dtype)
        self.values[p.slot, :, p.column] = value_states[0].transpose(0, 1).to(self.values.dtype)
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.owner.packed.mask.shape[-1], 0

    def get_seq_length(self) -> int:
        return 0  # positions are given with every pass

    def get_max_length(self) -> int:
        return self.keys.shape[2]


class SlotCache(Cache):
    """Keys and values of `slots` rows in preallocated tensors [slots, kv_heads, capacity, head_dim] per layer; a
    row's sequence sits in columns [0, length)."""

    def __init__(self, shapes: list[tuple[int, int, int]], slots: int, capacity: int, dtype, device):
        self.packed: _Packed | None = None  # the layout of the pass in progress
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

    def remap(self, rows: torch.Tensor | None, slots: int, capacity: int, used: int) -> None:
        """Rebuild with `slots` rows and `capacity` columns: old rows `rows` (all when None) become rows 0..k-1,
        with their first `used` columns."""
        for layer in self.layers:
            for name in ("keys", "values"):
                old = getattr(layer, name)
                new = old.new_zeros((slots, old.shape[1], capacity, old.shape[3]))
                taken = old if rows is None else old[rows]
                new[: taken.shape[0], :, :used] = taken[:, :, :used]
                setattr(layer, name, new)


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
    length: int = 0  # tokens in the cache (continuous batching)
    # tokens to feed next: the prompt (after what it reuses), or a sampled token and the text its grammar forces
    pending: list[int] = field(default_factory=list)
    forced: int = 0  # answer tokens its grammar forced

    @property
    def prompt_len(self) -> int:
        return len(self.prompt)


class Decoder:
    """One run of continuous batching over `requests` (and the follow-ups `follow` returns) with a backend's
    model, tokenizer, sampler and grammar matchers."""

    growth = 1.25  # a cache too short for a joiner grows at least this much
    min_reuse = 16  # shared prompt tokens worth copying (or waiting a pass for)

    def __init__(self, backend: Any, requests: list[GenerationRequest], follow: Follow | None):
        self.b = backend
        self.requests = list(requests)
        self.follow = follow
        self.queue: deque[int] = deque(range(len(self.requests)))
        self.results: dict[int, GenerationResult] = {}
        self.rows: list[_Row | None] = []
        self.cache: SlotCache | None = None
        self.bitmask = None
        self.resident: list[list[int]] = []  # a free slot's tokens whose keys and values it still holds
        self.prompts: dict[int, list[int]] = {}  # a waiting request's prompt tokens, once tokenized
        self.reused_tokens = 0  # prompt tokens whose keys and values were copied or kept rather than computed
        self.fed = 0  # tokens through the model
        self.forced = 0  # answer tokens a grammar forced (fed in passes, never sampled)

    # --- the run -------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def run(self) -> list[GenerationResult]:
        while self.queue or any(self.rows):
            free = [s for s, r in enumerate(self.rows) if r is None]
            if self.queue and len(self.rows) < self.b.batch_size and len(free) < len(self.queue):
                self._resize(min(self.b.batch_size, len(self.rows) - len(free) + len(self.queue)))
                free = [s for s, r in enumerate(self.rows) if r is None]
            if self.queue and free:
                self._admit(free)
            live = sum(r is not None for r in self.rows)
            if live and not self.queue and live <= len(self.rows) // 2:
                self._resize(live)  # the tail: finished rows leave rather than pad every step
            if live:
                self._step()
        return [self.results[i] for i in range(len(self.requests))]

    def _admit(self, free: list[int]) -> None:
        """Put waiting requests in free slots, each with its prompt pending after the longest prefix it shares with
        what a slot holds: a live row, or the last row of a free slot (a retry has its parent's prompt, a next turn
        starts with the last turn and its reply, and one person's styles share their facts). Those keys and values
        are copied in, or kept where the joiner takes that very slot. A request that shares more with a prompt
        joining in this round waits one pass for it."""
        joining: list[list[int]] = []
        waiting: list[int] = []
        while free and self.queue:
            index = self.queue.popleft()
            prompt = self._prompt(index)
            source, shared = max(((s, self._shared(prompt, self._held(s))) for s in range(len(self.rows))),
                                 key=lambda x: x[1], default=(None, 0))  # fmt: skip
            later = max((self._shared(prompt, p) for p in joining), default=0)
            if later >= shared + self.min_reuse:
                waiting.append(index)
                continue
            if shared < self.min_reuse:
                source, shared = None, 0
            slot = source if source in free else min(free, key=lambda s: len(self.resident[s]))
            free.remove(slot)
            self._place(index, slot, prompt, source, shared)
            joining.append(prompt)
        self.queue.extendleft(reversed(waiting))

    def _place(self, index: int, slot: int, prompt: list[int], source: int | None, shared: int) -> None:
        request = self.requests[index]
        self.prompts.pop(index, None)  # the row keeps it
        row = new_row(self.b, index, request, prompt)
        self._reserve(len(prompt) + request.sampling.max_tokens)
        if source is not None and source != slot:
            for layer in self.cache.layers:
                layer.keys[slot, :, :shared] = layer.keys[source, :, :shared]
                layer.values[slot, :, :shared] = layer.values[source, :, :shared]
        row.length = shared
        row.pending = prompt[shared:]
        self.reused_tokens += shared
        self.resident[slot] = []
        self.rows[slot] = row

    def _prompt(self, index: int) -> list[int]:
        if index not in self.prompts:
            self.prompts[index] = self.b.prompt_ids(self.requests[index].message_dicts())
        return self.prompts[index]

    def _held(self, slot: int) -> list[int]:
        """The tokens whose keys and values slot `slot` holds, in columns [0, len)."""
        row = self.rows[slot]
        return self.resident[slot] if row is None else (row.prompt + row.tokens)[: row.length]

    @staticmethod
    def _shared(prompt: list[int], held: list[int]) -> int:
        """Leading tokens `prompt` shares with `held`, never all of it: its last token must run to give logits."""
        n = min(len(prompt) - 1, len(held))
        if n <= 0:
            return 0
        differ = np.flatnonzero(np.asarray(prompt[:n]) != np.asarray(held[:n]))
        return int(differ[0]) if len(differ) else n

    def _step(self) -> None:
        """One packed pass over every live row's pending tokens, then a token sampled for each."""
        b, c = self.b, self.cache
        live = [(s, r) for s, r in enumerate(self.rows) if r is not None]
        ids: list[int] = []
        columns: list[int] = []
        slots: list[int] = []
        last: list[int] = []
        runs: list[tuple[int, int, torch.Tensor]] = []
        lengths = [1] * len(self.rows)  # an idle slot attends to one column: no row of the mask is empty
        for s, r in live:
            k, start = len(r.pending), r.length
            if k > 1:  # its earlier tokens: causal over the row's own columns
                mask = torch.arange(start + k - 1)[None, :] <= torch.arange(start, start + k - 1)[:, None]
                runs.append((s, len(ids), mask[None, None].to(b.device)))
            ids += r.pending
            columns += range(start, start + k)
            slots += [s] * k
            last.append(len(ids) - 1)
            lengths[s] = start + k
        width = max(lengths)
        mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
        as_tensor = lambda x: torch.tensor(x, dtype=torch.long, device=b.device)  # noqa: E731
        c.packed = packed = _Packed(
            as_tensor(slots), as_tensor(columns), as_tensor(last), as_tensor([s for s, _ in live]),
            mask[:, None, None, :].to(b.device), runs,
        )  # fmt: skip
        out = b.model(
            input_ids=as_tensor(ids)[None], position_ids=packed.column[None], attention_mask=packed.mask,
            past_key_values=c, use_cache=True, logits_to_keep=packed.last, packed=packed,
        )  # fmt: skip
        c.packed = None
        self.fed += len(ids)
        for _, r in live:
            r.length += len(r.pending)
            r.pending = []
        self._sample(out.logits[0], [(j, s) for j, (s, _) in enumerate(live)])

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
            if accept(self.b, row, sample(logits[j], row.request, row.generator)):
                self._finish(s)

    def _finish(self, slot: int) -> None:
        row = self.rows[slot]
        self.rows[slot] = None
        self.forced += row.forced
        self.results[row.index] = result(self.b, row, time.perf_counter() - row.admitted)
        self.resident[slot] = (row.prompt + row.tokens)[: row.length]  # until another row takes the slot
        more = self.follow(row.index, self.results[row.index]) if self.follow is not None else []
        fresh = list(range(len(self.requests), len(self.requests) + len(more)))
        self.requests += more
        self.queue.extendleft(reversed(fresh))  # a follow-up is the next link of a chain: it goes first

    # --- room in the cache ---------------------------------------------------------------------------------
    def _reserve(self, need: int) -> None:
        """Make room for a sequence of `need` tokens (prompt and answer): allocate the cache on first use, with
        each layer's shapes from a one-token pass, and grow it when a joiner needs more."""
        if self.cache is None:
            probe = self.b.model(
                input_ids=torch.tensor([[self.b.tokenizer.pad_token_id]], device=self.b.device),
                past_key_values=DynamicCache(), use_cache=True, logits_to_keep=1,
            ).past_key_values  # fmt: skip
            shapes = [(la.keys.shape[1], la.keys.shape[3], la.values.shape[3]) for la in probe.layers]
            k = probe.layers[0].keys
            # on CPU, attention over a half-precision cache is several times slower than over float32
            dtype = torch.float32 if k.device.type == "cpu" else k.dtype
            self.cache = SlotCache(shapes, len(self.rows), need, dtype, k.device)
        elif need > self.cache.capacity:
            capacity = max(need, int(self.cache.capacity * self.growth))
            self.cache.remap(None, len(self.rows), capacity, self._used())

    def _used(self) -> int:
        return max((len(self._held(s)) for s in range(len(self.rows))), default=0)

    def _resize(self, slots: int) -> None:
        """Change the number of slots; live rows move to the first ones."""
        if self.cache is None:  # nothing admitted yet: the first admission allocates
            self.rows = [None] * slots
            self.resident = [[] for _ in range(slots)]
            return
        keep = [s for s, r in enumerate(self.rows) if r is not None]
        index = torch.tensor(keep, dtype=torch.long, device=self.b.device)
        self.cache.remap(index, slots, self.cache.capacity, self._used())
        self.rows = [self.rows[s] for s in keep] + [None] * (slots - len(keep))
        self.resident = [[] for _ in range(slots)]  # free slots start empty


# --- one row's tokens (shared with the static-batch loop) --------------------------------------------------
def new_row(backend: Any, index: int, request: GenerationRequest, prompt: list[int]) -> _Row:
    """A request's decoding state: its own generator, seeded from the request, and its own grammar matcher."""
    g = torch.Generator(device="cpu")
    g.manual_seed((request.sampling.seed * 1_000_003 + request.sample_index) % (2**63 - 1))
    return _Row(index, request, prompt, g, backend._matcher(request.constraint))


def accept(backend: Any, row: _Row, token: int) -> bool:
    """Take a sampled token, and then the text its grammar forces (`forced_tokens`); True when the row is finished
    (its `finish` says why). What the model must read next is left in `row.pending`."""
    m = row.matcher
    if m is not None:
        m.accept_token(token)
    if token in backend.eos_ids or (m is not None and m.is_terminated()):
        row.finish = "stop"
        if token not in backend.eos_ids:
            row.tokens.append(token)
        return True
    row.tokens.append(token)
    row.pending = [token]
    if len(row.tokens) >= row.request.sampling.max_tokens:
        return True
    for t in forced_tokens(backend, m):
        if not m.accept_token(t):  # never for the grammar's own forced text; stop forcing if it happens
            break
        row.tokens.append(t)
        row.pending.append(t)
        row.forced += 1
        if len(row.tokens) >= row.request.sampling.max_tokens:
            return True
    stop = row.request.sampling.stop
    if stop and any(s in backend.tokenizer.decode(row.tokens[-16:], skip_special_tokens=True) for s in stop):
        row.finish = "stop"
        return True
    return False


def forced_tokens(backend: Any, matcher: Any) -> list[int]:
    """The tokens of the text the grammar allows as the only continuation (none without a grammar), tokenized as
    the tokenizer would; empty when that text does not round-trip through the tokenizer on its own."""
    if matcher is None or not backend.jump_forward:
        return []
    text = matcher.find_jump_forward_string()
    if not text:
        return []
    known = backend._forced
    if text not in known:
        ids = backend.tokenizer.encode(text, add_special_tokens=False)
        known[text] = ids if backend.tokenizer.decode(ids) == text else []
    return known[text]


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
