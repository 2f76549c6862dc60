"""The Ray executor: a stage's batches as Ray tasks across a cluster, LLM stages on pools of engine replicas.

    factory build recipe.yaml --executor ray                    # a Ray cluster started in this process
    factory build recipe.yaml --executor ray --address auto     # the cluster this machine belongs to (`ray start`)
    factory build recipe.yaml --executor ray --address ray://head:10001

Batches of a stage that uses no backend run as Ray tasks (`num_cpus` / `num_gpus` per stage from the recipe's
`executor:` block). Their inputs travel as data: the driver puts each input dataset's Arrow table into the object
store once and the tasks read it from there; results come back the same way, and only the driver writes the runs
folder, so the nodes need no shared filesystem. A task lost with its worker or node is re-run (`max_retries`), on
another node if need be; an exception raised by the stage itself is not retried and fails the stage as it would
locally (finished batches stay checkpointed by the runner).

A stage that names backends runs its batches on the driver, a few at a time, and `ctx.llm(name)` hands out a
client of the backend's replica pool (`factory.ray_pool`): the request cache stays on the driver, requests go to
whichever replica is free. The executor records the cluster, the resources asked and per-replica counts; the
runner puts them in the manifest. None of this enters a fingerprint.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from factory.errors import RecipeError
from factory.executor import BatchResult, BatchTask, load_input, run_task
from factory.fingerprint import referenced_backends
from factory.progress import PoolProgress
from factory.store import Upstream

log = logging.getLogger(__name__)


class ClusterError(RuntimeError):
    """A batch was lost to the cluster (a worker or node gone) more times than `max_retries` allows."""


@dataclass(frozen=True)
class ShippedUpstream(Upstream):
    """A finished input as a remote batch sees it: the manifest travels with it, read on the driver."""

    snapshot: dict = field(default_factory=dict)

    @property
    def manifest(self) -> dict[str, Any]:
        return self.snapshot


def _dataset(table: Any) -> Any:
    from datasets import Dataset
    from datasets.table import InMemoryTable

    return Dataset(InMemoryTable(table))  # features come back from the schema's metadata


def _packed(table: Any) -> Any:
    """A table as Arrow IPC bytes. Ray's own Arrow reducer trims buffers (an empty list's offsets, 16 bytes, become
    4), so the bytes written would depend on the executor; IPC keeps them as a local build's checkpoints do."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _unpacked(buffer: Any) -> Any:
    import pyarrow as pa

    return pa.ipc.open_stream(buffer).read_all()


def _run_shipped(task: BatchTask, shipped: dict[str, Any]) -> BatchResult:
    """A batch on a Ray worker: inputs from the object store, the result back through it."""
    import datasets
    import ray

    datasets.disable_progress_bars()

    def get(ref: Any) -> Any:
        return _dataset(_unpacked(ray.get(ref)))

    inputs = {role: {n: get(r) for n, r in v.items()} if isinstance(v, dict) else get(v) for role, v in shipped.items()}
    result = run_task(task, inputs)
    result.table = _packed(result.table)
    result.extras = {name: _packed(t) for name, t in result.extras.items()}
    return result


def _ship_upstream(upstream: dict[str, Any]) -> dict[str, Any]:
    def one(u: Any) -> Any:
        return ShippedUpstream(u.name, u.fingerprint, u.path, u.manifest) if isinstance(u, Upstream) else u

    return {r: {n: one(u) for n, u in v.items()} if isinstance(v, dict) else one(v) for r, v in upstream.items()}


def _one_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1].strip() if lines else ''}"[:300]


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None, config: Any = None):
        """`config`: the recipe's `executor:` block (`factory.recipe.ExecutorConfig`); `address` overrides its."""
        from factory.recipe import ExecutorConfig

        self.config = config or ExecutorConfig(type="ray")
        self.address = address if address is not None else self.config.address
        self.owned = False
        self.reports: dict[str, dict[str, Any]] = {}  # stage -> what it used (stages may run at the same time)
        self.progress: Any = None  # the runner's progress bars: pool activity is shown under them
        self._connecting = threading.Lock()

    @property
    def stages_in_flight(self) -> int:
        return self.config.stages_in_flight

    # --- the cluster ----------------------------------------------------------------------------------------
    def connect(self) -> None:
        import ray

        with self._connecting:
            if not ray.is_initialized():
                self._init()

    def _init(self) -> None:
        import ray

        kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
        if self.address is None:
            kwargs["include_dashboard"] = False
        if os.environ.get("PYTHONPATH"):  # `module:attr` stage hooks must import on the workers too
            kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}}
        ray.init(address=self.address, **kwargs)
        self.owned = True

    def close(self) -> None:
        import ray

        if self.owned and ray.is_initialized():
            ray.shutdown()
        self.owned = False

    def report(self, stage: str) -> dict[str, Any]:
        """What a stage used: the cluster, the resources asked, per-replica counts (for the manifest)."""
        return self.reports.get(stage, {})

    # --- Executor.map ---------------------------------------------------------------------------------------
    def map(self, tasks: Any) -> Any:
        import ray

        tasks = list(tasks)
        if not tasks:
            return
        self.connect()
        stage = tasks[0].ctx.stage
        report = self.reports[stage] = {
            "address": self.address or "local",
            "nodes": sum(1 for n in ray.nodes() if n.get("Alive")),
            "cluster_resources": {k: v for k, v in ray.cluster_resources().items() if "node:" not in k},
        }
        names = referenced_backends(tasks[0].options)
        if names:
            yield from self._on_pools(stage, tasks, names, report)
        else:
            yield from self._as_tasks(stage, tasks, report)

    def _as_tasks(self, stage: str, tasks: list[BatchTask], report: dict[str, Any]) -> Any:
        import ray
        from ray.exceptions import RayError, RayTaskError

        wanted = self.config.stages.get(stage)
        cpus, gpus = (wanted.num_cpus, wanted.num_gpus) if wanted else (1.0, 0.0)
        report["stage_resources"] = {"num_cpus": cpus, "num_gpus": gpus, "tasks": len(tasks)}
        refs: dict[str, Any] = {}

        def put(path: str) -> Any:  # each input once, however many batches read it
            if path not in refs:
                refs[path] = ray.put(_packed(load_input(path).data.table))
            return refs[path]

        remote = ray.remote(_run_shipped).options(
            num_cpus=cpus, num_gpus=gpus, max_retries=self.config.max_retries, retry_exceptions=False
        )
        pending: dict[Any, BatchTask] = {}
        for task in tasks:
            shipped = {
                r: {n: put(p) for n, p in v.items()} if isinstance(v, dict) else put(v) for r, v in task.inputs.items()
            }
            task.ctx.upstream = _ship_upstream(task.ctx.upstream)
            pending[remote.remote(task, shipped)] = task
        error: BaseException | None = None
        try:
            while pending:  # every batch still running finishes (and is checkpointed) even after one has failed
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    task = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                        result.table = _unpacked(result.table)
                        result.extras = {name: _unpacked(t) for name, t in result.extras.items()}
                    except RayTaskError as exc:  # the stage raised: as a local build would
                        cause = exc.cause if isinstance(exc.cause, BaseException) else exc
                        error = error or cause
                        continue
                    except RayError as exc:
                        error = error or ClusterError(
                            f"batch {task.ctx.batch_index} lost after {self.config.max_retries} retries "
                            f"({_one_line(exc)})"
                        )
                        continue
                    yield result
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
        if error is not None:
            raise error

    def _replica_shape(self, name: str, config: Any) -> tuple[int, float, float]:
        """(replicas, CPUs and GPUs per replica) for a backend, checked against the cluster's nodes: replicas that
        could never all be placed are one clear line, not a build waiting forever."""
        import ray

        wanted = self.config.backends.get(name)
        replicas = wanted.replicas if wanted else 1
        gpus = wanted.num_gpus if wanted and wanted.num_gpus is not None else None
        if gpus is None:
            gpus = float(getattr(config, "tensor_parallel_size", 0)) if config.type == "vllm" else 0.0
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        cpus = wanted.num_cpus if wanted and wanted.num_cpus is not None else None
        if cpus is None:
            cpus = 1.0
            if config.type == "transformers" and not gpus and replicas == 1:
                import torch  # a CPU matmul's bits depend on its thread count: as many as a local build uses

                cpus = float(min(torch.get_num_threads(), max((n.get("CPU", 0) for n in nodes), default=1) or 1))
        fits = sum(
            int(min(n.get("CPU", 0) // cpus if cpus else replicas, n.get("GPU", 0) // gpus if gpus else replicas))
            for n in nodes
        )
        if fits < replicas:
            raise RecipeError(
                f"executor.backends.{name}",
                f"{replicas} replica(s) of {cpus:g} CPU(s) and {gpus:g} GPU(s) each do not fit on the cluster's "
                f"{len(nodes)} node(s) ({fits} would); lower replicas, num_cpus or num_gpus",
            )
        return replicas, cpus, gpus

    def _on_pools(self, stage: str, tasks: list[BatchTask], names: list[str], report: dict[str, Any]) -> Any:
        from factory.ray_pool import Pool

        pools: dict[str, Pool] = {}
        shown: list[PoolProgress] = []
        try:
            for name in dict.fromkeys(names):
                config = tasks[0].ctx.backends[name]
                replicas, cpus, gpus = self._replica_shape(name, config)
                pools[name] = Pool(
                    name, config, replicas=replicas, num_cpus=cpus, num_gpus=gpus, max_retries=self.config.max_retries
                )
            shown += [PoolProgress(self.progress, f"  {stage} · {n}", pool.activity) for n, pool in pools.items()]
            for task in tasks:
                task.ctx.llm_pools = pools
            from tqdm import tqdm

            tqdm.get_lock()  # made once here: progress bars opened by batch threads at once race to create it
            # batches in order by default, as a local build runs them: which batch first asks a request repeated
            # across batches (and so which neighbours it is computed beside) stays the same
            width = self.config.batches_in_flight
            error: BaseException | None = None
            with ThreadPoolExecutor(max_workers=width, thread_name_prefix=f"{stage}-batch") as threads:
                futures = {threads.submit(run_task, task) for task in tasks}
                try:
                    while futures:
                        done, futures = wait(futures, return_when=FIRST_COMPLETED)
                        for future in done:
                            if future.cancelled():
                                continue
                            if future.exception() is not None:
                                error = error or future.exception()
                                for f in futures:
                                    f.cancel()
                            else:
                                yield future.result()
                finally:
                    for f in futures:
                        f.cancel()
            if error is not None:
                raise error
        finally:
            for line in shown:
                line.close()
            report["pools"] = {name: pool.close() for name, pool in pools.items()}
