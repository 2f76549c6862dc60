"""LLM engine replicas on Ray: a pool of actors per backend, each holding one engine for a whole stage.

The stage runs on the driver and sees the pool through `ctx.llm(name)`: a `CachedBackend` whose backend is a
`PoolBackend`, so the request cache is consulted on the driver before anything is sent (a cached request never
reaches a replica), every answer is cached as it comes back, and follow-ups (retries, a conversation's next turn)
are looked up in the cache and then go back to the pool. That is the same client a local build gets, which is what
keeps the two builds' bytes equal.

Dispatch: one thread on the driver keeps each replica fed with up to `window` requests and hands every answer to
the stage that asked as soon as its replica finishes it; there is no round barrier across replicas. Inside a
replica a request joins the engine's running batch as a follow-up of whatever finishes next, so a replica's
continuous batching sees one stream, not chunks.

Faults: a request that raises inside a replica is re-run alone there, and if it raises again it comes back as a
result with `finish_reason == "error"` (the stage's validation makes it a failure row with the reason); a replica
that dies (its process or node) has its requests re-queued on the others and is replaced, up to `max_retries`
times; with no replica left the stage fails with one line.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from collections import deque
from typing import Any

from factory.llm.types import (
    Follow,
    GenerationRequest,
    GenerationResult,
    ScoreRequest,
    ScoreResult,
    one_line,
    score_each,
)

log = logging.getLogger(__name__)


class ReplicaError(RuntimeError):
    """No replica of a backend is left (or scoring failed on every try)."""


class Replica:
    """One engine in one actor (made remote by `Pool`). A background thread runs the engine; `submit` adds
    requests to its running batch and `take` returns what finished."""

    def __init__(self, config: Any, threads: int = 0, lockstep: bool = False):
        from factory.llm.backend import load

        if threads and config.type == "transformers":
            import torch

            torch.set_num_threads(threads)  # what the replica reserved, whatever OMP_NUM_THREADS says
        self.engine = load(config).backend  # the driver holds the cache: the replica runs what it is sent
        self.model_id, self.revision = self.engine.model_id, self.engine.revision
        self.cond = threading.Condition()
        self.inbox: deque = deque()
        self.outbox: list = []
        self.lockstep = lockstep  # each finished request waits for its follow-ups (`reply`), as a local run does
        self.awaiting: set = set()  # tags whose follow-ups the decode loop is waiting for
        self.replies: dict[Any, list] = {}
        self.engine_lock = threading.Lock()  # generate (background thread) and score (calls) take turns
        self.stats = {"requests": 0, "errors": 0, "tokens_out": 0, "busy_s": 0.0, "scored": 0}
        threading.Thread(target=self._loop, daemon=True).start()

    def info(self) -> dict[str, Any]:
        import ray

        return {
            "model_id": self.model_id,
            "revision": self.revision,
            "node": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
        }

    def submit(self, items: list[tuple[Any, GenerationRequest]]) -> None:
        with self.cond:
            self.inbox.extend(items)
            self.cond.notify_all()

    def reply(self, tag: Any, items: list[tuple[Any, GenerationRequest]]) -> None:
        """The follow-ups of a finished request (lockstep): they join the running batch at the step it finished,
        as a local run's would; for a request nothing waits on (re-run alone after an engine error) they queue."""
        with self.cond:
            if tag in self.awaiting:
                self.replies[tag] = items
            else:
                self.inbox.extend(items)
            self.cond.notify_all()

    def take(self, timeout: float = 0.5) -> list[tuple[Any, GenerationResult]]:
        with self.cond:
            self.cond.wait_for(lambda: self.outbox, timeout)
            out, self.outbox = self.outbox, []
        return out

    def report(self) -> dict[str, Any]:
        return {**self.stats, "pid": os.getpid()}

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        started = time.perf_counter()
        with self.engine_lock:  # one request the engine cannot score comes back failed, alone
            out = score_each(self.engine.score_choices, requests)
        self.stats["busy_s"] += time.perf_counter() - started
        self.stats["scored"] += len(requests)
        return out

    def _put(self, tag: Any, result: GenerationResult) -> None:
        self.stats["requests"] += 1
        self.stats["tokens_out"] += result.completion_tokens
        self.stats["errors"] += result.finish_reason == "error"
        self.outbox.append((tag, result))
        self.cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.inbox)
                items = list(self.inbox)
                self.inbox.clear()
            started = time.perf_counter()
            with self.engine_lock:
                self._run(items)
            self.stats["busy_s"] += time.perf_counter() - started

    def _run(self, items: list[tuple[Any, GenerationRequest]]) -> None:
        tags = [t for t, _ in items]
        requests = [r for _, r in items]
        done: set[int] = set()

        def follow(j: int, result: GenerationResult) -> list[GenerationRequest]:
            done.add(j)
            with self.cond:
                more = []
                if self.lockstep:
                    self.awaiting.add(tags[j])
                self._put(tags[j], result)
                if self.lockstep:
                    self.cond.wait_for(lambda: tags[j] in self.replies)
                    self.awaiting.discard(tags[j])
                    more = self.replies.pop(tags[j])
                more += list(self.inbox)  # what arrived meanwhile joins the running batch
                self.inbox.clear()
            tags.extend(t for t, _ in more)
            requests.extend(r for _, r in more)
            return [r for _, r in more]

        try:
            self.engine.generate(list(requests), follow)
        except Exception as exc:  # one bad request must not sink its neighbours: re-run the unfinished alone
            log.warning("replica: %s: %s; re-running its unfinished requests one by one", type(exc).__name__, exc)
            for j in [j for j in range(len(requests)) if j not in done]:
                try:
                    result = self.engine.generate([requests[j]])[0]
                except Exception as one:
                    result = GenerationResult(one_line(one), "error", 0, 0)
                with self.cond:
                    self._put(tags[j], result)


class Pool:
    """The replicas of one backend for one stage, and the driver thread that feeds them."""

    def __init__(
        self,
        name: str,
        config: Any,
        replicas: int = 1,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        max_retries: int = 3,
        window: int | None = None,
    ):
        import ray

        self.name = name
        self.config = config
        self.replace_budget = max_retries
        self.num_cpus = num_cpus
        # one replica runs in lockstep with the stage: it gets each call's requests at once and every finished
        # request waits for its follow-ups, so its engine sees what a local one sees, step for step (the bytes
        # match); several replicas share requests as they free up and follow-ups go to whichever has room
        self.lockstep = replicas == 1
        self.window = window or 2 * int(getattr(config, "batch_size", None) or getattr(config, "concurrency", 8))
        if self.lockstep:
            self.window = 1 << 30
        self._actor_class = ray.remote(
            num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=0, max_task_retries=0, max_concurrency=4
        )(Replica)
        self.actors: dict[int, Any] = {}  # replica id -> actor handle (live, engine loaded)
        self.starting: dict[Any, int] = {}  # info() ref of a replacement still loading -> its id
        self.handles: dict[int, Any] = {}  # every replica started, live or not (to stop them all)
        self.scoring: dict[int, int] = {}  # score calls in flight per replica
        self.inflight: dict[int, dict[Any, GenerationRequest]] = {}
        self.counts: dict[int, dict[str, Any]] = {}  # what each replica reported (kept after it is gone)
        self._ids = itertools.count()
        self.nodes: dict[int, str] = {}
        for _ in range(replicas):
            self._spawn()
        infos = ray.get(list(self.starting))  # waits for every engine to load
        for rid, info in zip(list(self.starting.values()), infos):
            self._ready(rid, info)
        self.starting.clear()
        self.model_id, self.revision = infos[0]["model_id"], infos[0]["revision"]
        self.pending: deque = deque()
        self.routes: dict[int, queue.Queue] = {}
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.failure: str | None = None
        self.answered = self.scored = self.tokens = 0  # across replicas, for the progress line
        self.started = time.perf_counter()
        self._stop = False
        self._thread = threading.Thread(target=self._dispatch, daemon=True, name=f"pool-{name}")
        self._thread.start()

    # --- what ctx.llm hands out ------------------------------------------------------------------------------
    def client(self, cache_path: Any) -> Any:
        from factory.llm.backend import CachedBackend
        from factory.llm.cache import RequestCache

        return CachedBackend(PoolBackend(self), RequestCache(cache_path) if cache_path is not None else None)

    # --- replicas -------------------------------------------------------------------------------------------
    def _spawn(self) -> None:
        """Start a replica; it gets work once its engine has loaded (a replacement that cannot be placed, its node
        gone, never holds requests hostage)."""
        rid = next(self._ids)
        self.handles[rid] = self._actor_class.remote(self.config, max(1, int(self.num_cpus)), self.lockstep)
        self.starting[self.handles[rid].info.remote()] = rid

    def _ready(self, rid: int, info: dict[str, Any]) -> None:
        self.actors[rid] = self.handles[rid]
        self.inflight[rid] = {}
        self.scoring[rid] = 0
        self.nodes[rid] = info["node"]

    def _lost(self, rid: int, exc: BaseException) -> None:
        """A replica died: its requests go back to the front of the queue, and a replacement is started."""
        log.warning("%s: replica %d lost (%s); re-queueing %d requests", self.name, rid, type(exc).__name__,
                    len(self.inflight[rid]))  # fmt: skip
        with self.lock:
            if self.actors.pop(rid, None) is None:
                return
            self.pending.extendleft(reversed(list(self.inflight.pop(rid, {}).items())))
        self.counts.setdefault(rid, {})["lost"] = f"{type(exc).__name__}"
        if self.replace_budget > 0:
            self.replace_budget -= 1
            self._spawn()
        elif not self.actors and not self.starting:
            self.failure = f"backend '{self.name}': every replica was lost and the retries are spent"

    # --- dispatch -------------------------------------------------------------------------------------------
    def submit(self, route: int, items: list[tuple[int, GenerationRequest]]) -> None:
        with self.lock:
            self.pending.extend(((route, j), r) for j, r in items)
        self.wake.set()

    def reply(self, rid: int, tag: Any, route: int, items: list[tuple[int, GenerationRequest]]) -> None:
        """Lockstep: the follow-ups of request `tag` (possibly none) back to the replica that ran it; if that
        replica is gone they queue like any request."""
        tagged = [((route, j), r) for j, r in items]
        with self.lock:
            actor = self.actors.get(rid)
            if actor is not None:
                self.inflight[rid].update(tagged)
                actor.reply.remote(tag, tagged)
                return
            self.pending.extend(tagged)
        self.wake.set()

    def _dispatch(self) -> None:
        import ray
        from ray.exceptions import RayActorError

        takes: dict[Any, int] = {}  # outstanding take() ref -> replica id
        while not self._stop:
            if self.starting:  # replacements whose engine has loaded join the pool
                done, _ = ray.wait(list(self.starting), num_returns=len(self.starting), timeout=0)
                for ref in done:
                    rid = self.starting.pop(ref)
                    try:
                        self._ready(rid, ray.get(ref))
                    except RayActorError as exc:
                        self.counts.setdefault(rid, {})["lost"] = type(exc).__name__
                        if not self.actors and not self.starting:
                            self.failure = f"backend '{self.name}': no replica could be started ({exc})"
            with self.lock:  # fill every live replica up to its window, least loaded first
                for rid in sorted(self.actors, key=lambda r: len(self.inflight[r])):
                    room = self.window - len(self.inflight[rid])
                    batch = [self.pending.popleft() for _ in range(min(room, len(self.pending)))]
                    if batch:
                        self.inflight[rid].update(batch)
                        self.actors[rid].submit.remote(batch)
            for rid, actor in list(self.actors.items()):
                if self.inflight.get(rid) and rid not in takes.values():
                    takes[actor.take.remote()] = rid
            if not takes:
                self.wake.wait(0.2)
                self.wake.clear()
                continue
            ready, _ = ray.wait(list(takes), num_returns=1, timeout=0.2)
            for ref in ready:
                rid = takes.pop(ref)
                try:
                    finished = ray.get(ref)
                except RayActorError as exc:
                    if rid in self.actors:
                        self._lost(rid, exc)
                    continue
                for tag, result in finished:
                    if self.inflight.get(rid, {}).pop(tag, None) is not None:
                        self.answered += 1
                        self.tokens += result.completion_tokens
                        route = self.routes.get(tag[0])
                        if route is not None:
                            route.put((tag[1], result, rid))
                        elif self.lockstep:  # its stage call has ended (it raised): nothing follows
                            self.reply(rid, tag, tag[0], [])
            if self.failure:
                for q in list(self.routes.values()):
                    q.put(None)

    def activity(self) -> str:
        """Replicas busy, requests answered (generated or scored), requests/s and generated tokens/s so far."""
        seconds = max(time.perf_counter() - self.started, 1e-9)
        busy = sum(1 for r in list(self.actors) if self.inflight.get(r) or self.scoring.get(r))
        done = self.answered + self.scored
        return (
            f"{busy}/{len(self.actors)} replicas busy · {done:,} requests · {done / seconds:.1f} req/s · "
            f"{self.tokens / seconds:,.0f} tok/s"
        )

    def close(self) -> dict[str, Any]:
        """Stop the replicas; what each did (requests, tokens, busy seconds, utilisation over the pool's life)."""
        import ray

        self._stop = True
        self._thread.join(timeout=5)
        seconds = time.perf_counter() - self.started
        for rid, actor in list(self.actors.items()):
            try:
                self.counts[rid] = {**self.counts.get(rid, {}), **ray.get(actor.report.remote(), timeout=10)}
            except Exception:  # a replica that cannot answer any more keeps what was known of it
                pass
        for actor in self.handles.values():
            ray.kill(actor)
        for rid, c in self.counts.items():
            c["node"] = self.nodes.get(rid)
            if "busy_s" in c:
                c["utilisation"] = round(c["busy_s"] / seconds, 3) if seconds else 0.0
        return {"replicas": {str(k): v for k, v in sorted(self.counts.items())}, "seconds": round(seconds, 3)}


class PoolBackend:
    """The `Backend` interface over a pool (behind the stage's `CachedBackend`)."""

    _routes = itertools.count()

    def __init__(self, pool: Pool):
        self.pool = pool
        self.model_id, self.revision = pool.model_id, pool.revision

    def generate(self, requests: list[GenerationRequest], follow: Follow | None = None) -> list[GenerationResult]:
        pool = self.pool
        route = next(self._routes)
        answers: queue.Queue = queue.Queue()
        pool.routes[route] = answers
        requests = list(requests)
        results: dict[int, GenerationResult] = {}
        try:
            pool.submit(route, list(enumerate(requests)))
            while len(results) < len(requests):
                got = answers.get()
                if got is None:
                    raise ReplicaError(pool.failure)
                j, result, rid = got
                results[j] = result
                more = follow(j, result) if follow is not None else []
                tagged = list(enumerate(more, start=len(requests)))
                requests += more
                if pool.lockstep:
                    pool.reply(rid, (route, j), route, tagged)
                elif more:
                    pool.submit(route, tagged)
        finally:
            pool.routes.pop(route, None)
        return [results[j] for j in range(len(requests))]

    def score_choices(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """One call's requests go to one replica, as one call: the engine groups them exactly as a local build
        would (prefix groups, padding), so the scores are the same bits. Stages keep replicas busy by running
        several batches at once."""
        import ray
        from ray.exceptions import RayActorError

        pool = self.pool
        for _ in range(pool.replace_budget + 2):
            if not pool.actors:
                break
            with pool.lock:
                rid = min(pool.actors, key=lambda r: (pool.scoring.get(r, 0), len(pool.inflight.get(r, ()))))
                pool.scoring[rid] = pool.scoring.get(rid, 0) + 1
                actor = pool.actors[rid]
            try:
                scores = ray.get(actor.score.remote(list(requests)))
                pool.scored += len(scores)
                return scores
            except RayActorError as exc:
                pool._lost(rid, exc)
            finally:
                pool.scoring[rid] -= 1
        raise ReplicaError(pool.failure or f"backend '{pool.name}': scoring failed on every replica")
