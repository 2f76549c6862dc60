"""The runner: builds a recipe's stages in dependency order, reusing finished outputs and resuming partial ones.

A stage's output is reused when its fingerprint's folder is complete and the inputs it was built from are
byte-for-byte the inputs there now (their content hashes are recorded in its manifest); otherwise it is
rebuilt. A partial folder (a crash, a kill, a Ctrl-C) resumes at the first batch without a checkpoint.
"""

from __future__ import annotations

import logging
import platform
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from factory import __version__
from factory.errors import FactoryError, RecipeError, StageError, did_you_mean
from factory.executor import BatchTask, Executor, LocalExecutor, load_input, load_inputs
from factory.fingerprint import recipe_fingerprints, stage_payload
from factory.hub_inputs import fingerprint as hub_fingerprint
from factory.options import semantic_dump
from factory.progress import BatchProgress, StageSummary, progress_bars
from factory.recipe import Recipe
from factory.stage import StageContext
from factory.store import StageStore, Upstream, content_hash
from factory.wiring import check_columns, sources

log = logging.getLogger(__name__)

LIBRARIES = (
    "datasets",
    "pyarrow",
    "huggingface_hub",
    "pydantic",
    "numpy",
    "pandas",
    "torch",
    "transformers",
    "trl",
    "peft",
    "vllm",
    "xgrammar",
    "ray",
    "argilla",
)


@dataclass
class StageStatus:
    stage: str
    fingerprint: str
    state: str  # cached | stale | damaged | partial | missing
    batches_done: int = 0
    batches_total: int = 0
    rows: int | None = None
    detail: str = ""


def library_versions() -> dict[str, str]:
    versions = {"persona-factory": __version__, "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def executor_for(recipe: Recipe, kind: str | None = None, address: str | None = None) -> Executor:
    """The executor a build runs on: `kind` / `address` (the command line) over the recipe's `executor:` block.
    Operational only: outputs and fingerprints are the same on every executor."""
    config = recipe.executor
    kind = kind or ("ray" if address else config.type)
    if kind == "local":
        return LocalExecutor()
    if kind != "ray":
        raise FactoryError(f"--executor {kind}: unknown executor (local or ray)")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise FactoryError("the ray executor needs Ray: pip install 'persona-factory[ray]'") from None
    from factory.ray_executor import RayExecutor

    return RayExecutor(address=address, config=config)


class Runner:
    def __init__(
        self, recipe: Recipe, runs_dir: str | Path = "runs", executor: Executor | None = None, progress: bool = True
    ):
        self.recipe = recipe
        self.runs_dir = Path(runs_dir)
        self._owns_executor = executor is None
        self.executor = executor or executor_for(recipe)
        self.progress = progress
        self.fingerprints = recipe_fingerprints(recipe)
        self._verified: dict[str, tuple[int | None, str | None]] = {}  # stage -> (marker mtime, damage)

    def store(self, stage: str) -> StageStore:
        return StageStore(self.runs_dir, self.recipe.name, stage, self.fingerprints[stage])

    # --- status ----------------------------------------------------------------------------------------------
    def status(self, stage: str) -> StageStatus:
        store = self.store(stage)
        fp = self.fingerprints[stage]
        if store.is_complete():
            damage = self._damage(stage, store)
            if damage:
                return StageStatus(stage, fp, "damaged", detail=damage)
            marker = store.marker()
            changed = self._changed_inputs(stage, store)
            if changed:
                return StageStatus(
                    stage, fp, "stale", rows=marker["rows"], detail=f"input {changed[0]} changed since this was built"
                )
            return StageStatus(stage, fp, "cached", rows=marker["rows"], detail=f"{marker['rows']:,} rows")
        plan = store.load_plan()
        if plan is not None:
            done = len(store.done_batches())
            return StageStatus(stage, fp, "partial", done, len(plan), detail=f"{done}/{len(plan)} batches done")
        return StageStatus(stage, fp, "missing")

    def _damage(self, stage: str, store: StageStore) -> str | None:
        """Why a finished output cannot be reused (checked once per runner: its bytes are hashed), or None."""
        try:
            stamp = store.marker_path.stat().st_mtime_ns
        except OSError:
            return "its completion marker vanished"
        if self._verified.get(stage, (None,))[0] != stamp:
            self._verified[stage] = (stamp, store.damage())
        return self._verified[stage][1]

    def _changed_inputs(self, stage: str, store: StageStore) -> list[str]:
        recorded = store.manifest().get("inputs", {})
        changed = []
        for name in self.recipe.stages[stage].stage_inputs():  # hub inputs are pinned by their fingerprint
            upstream = self.store(name)
            if not upstream.is_complete():
                continue
            if self._damage(name, upstream) or recorded.get(name, {}).get("content_hash") != upstream.marker().get(
                "content_hash"
            ):
                changed.append(name)
        return changed

    def plan(self) -> list[StageStatus]:
        return [self.status(s) for s in self.recipe.order]

    # --- build -----------------------------------------------------------------------------------------------
    def select(
        self, only: list[str] | None = None, from_: str | None = None, force: list[str] | None = None
    ) -> tuple[list[str], set[str]]:
        """Stages to visit (in order) and stages to recompute regardless of their cache."""
        names = set(self.recipe.stages)
        for flag, values in (("--only", only or []), ("--force", force or []), ("--from", [from_] if from_ else [])):
            for v in values:
                if v not in names:
                    raise RecipeError("", f"{flag} {v}: no such stage{did_you_mean(v, names)}")
        forced = set(force or [])
        if from_:
            forced |= set(self.recipe.downstream(from_))
        if only:
            visit = [s for s in self.recipe.order if s in set(only)]
            for s in visit:
                for inp in self.recipe.upstream(s):
                    if inp not in visit and self.status(inp).state not in ("cached", "stale"):
                        raise RecipeError(
                            f"stages.{s}.inputs",
                            f"--only {s} needs '{inp}' built first (build it, or add --only {inp})",
                        )
        else:
            visit = list(self.recipe.order)
        return visit, forced

    def build(
        self,
        only: list[str] | None = None,
        from_: str | None = None,
        force: list[str] | None = None,
        dry_run: bool = False,
    ) -> list[StageSummary]:
        visit, forced = self.select(only, from_, force)
        if dry_run:
            return [
                StageSummary(
                    s, self.fingerprints[s], 0, 0, 0.0, "would rebuild" if s in forced else self.status(s).state
                )
                for s in visit
            ]
        width = getattr(self.executor, "stages_in_flight", 1)
        try:
            with progress_bars(self.progress) as bars:
                if hasattr(self.executor, "progress"):
                    self.executor.progress = bars  # pool activity under the stage bars
                if width > 1 and len(visit) > 1:
                    return self._build_concurrently(visit, forced, bars, width)
                return [
                    self._build_then_release(stage, stage in forced, bars, visit[i + 1 :])
                    for i, stage in enumerate(visit)
                ]
        finally:
            if self._owns_executor and hasattr(self.executor, "close"):
                self.executor.close()

    def _build_concurrently(self, visit: list[str], forced: set[str], bars: Any, width: int) -> list[StageSummary]:
        """Stages whose inputs are built run at the same time, up to `width`; stages that use a backend run one at
        a time (each on its backend's whole pool: two pools waiting for each other's replicas would never start).
        After a failure no new stage starts, the running ones finish (and are kept), and the first error in build
        order is raised. What each stage writes does not depend on what runs beside it."""
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
        from threading import Lock

        from factory.fingerprint import referenced_backends

        if hasattr(self.executor, "connect") and any(s in forced or self.status(s).state != "cached" for s in visit):
            self.executor.connect()  # from this thread, before the stage threads (Ray installs signal handlers)
        todo = list(visit)
        waits = {s: set(self.recipe.upstream(s)) & set(visit) for s in visit}
        llm_lock = Lock()
        done: dict[str, StageSummary] = {}
        errors: dict[str, BaseException] = {}

        def one(stage: str) -> StageSummary:
            if not referenced_backends(self.recipe.stages[stage].options):
                return self._build_stage(stage, stage in forced, bars)
            with llm_lock:
                return self._build_then_release(stage, stage in forced, bars, [s for s in visit if s not in done])

        with ThreadPoolExecutor(max_workers=width, thread_name_prefix="stage") as threads:
            running: dict[Any, str] = {}
            while todo or running:
                for stage in [s for s in todo if not errors and not (waits[s] - set(done))][: width - len(running)]:
                    todo.remove(stage)
                    running[threads.submit(one, stage)] = stage
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    stage = running.pop(future)
                    if future.exception() is not None:
                        errors[stage] = future.exception()
                    else:
                        done[stage] = future.result()
        if errors:
            raise errors[min(errors, key=visit.index)]
        return [done[s] for s in visit]

    def _build_then_release(self, stage: str, forced: bool, bars: Any, later: list[str]) -> StageSummary:
        """Build a stage, then unload the engines of its backends that no stage in `later` uses: GPU memory goes
        to the next model or to training instead of an engine that will not be asked again (`llm.backend`)."""
        from factory.fingerprint import referenced_backends
        from factory.llm.backend import release

        try:
            return self._build_stage(stage, forced, bars)
        finally:
            needed = {b for s in later if s != stage for b in referenced_backends(self.recipe.stages[s].options)}
            for name in set(referenced_backends(self.recipe.stages[stage].options)) - needed:
                release(self.recipe.backends[name])

    def _build_stage(self, stage: str, forced: bool, bars: Any) -> StageSummary:
        from filelock import FileLock, Timeout

        store = self.store(stage)
        store.dir.mkdir(parents=True, exist_ok=True)
        # the lock comes before anything is invalidated: a second build (--force, --from) must never delete the
        # checkpoints of a build that is still writing them
        lock = FileLock(str(store.dir / ".lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise FactoryError(
                f"stages.{stage}: another build is writing {store.dir}; wait for it or stop it"
            ) from None
        try:
            status = self.status(stage)
            if status.state == "cached" and not forced:
                marker = store.marker()
                return StageSummary(stage, store.fingerprint, marker["rows"], marker["failures"], 0.0, "cached")
            if status.state in ("cached", "stale", "damaged"):
                log.info("%s: recomputing (%s)", stage, "forced" if forced else f"{status.state}: {status.detail}")
                store.invalidate()
            elif forced and status.state == "partial":
                store.invalidate()
            return self._run_stage(stage, store, bars)
        finally:
            lock.release()

    def _upstream(self, entry: Any) -> dict[str, Upstream]:
        """Each input role's finished output: where it is, its fingerprint, its manifest and artifacts."""
        def view(n: str) -> Upstream:
            if n in entry.hub:
                return Upstream(n, hub_fingerprint(entry.hub[n]), str(self._hub_data(entry.hub[n]).parent))
            return self.store(n).view()

        return {role: {n: view(n) for n in v} if isinstance(v, list) else view(v) for role, v in entry.roles.items()}

    def _context(self, stage: str, store: StageStore) -> StageContext:
        entry = self.recipe.stages[stage]
        return StageContext(
            recipe=self.recipe.name,
            stage=stage,
            seed=self.recipe.stage_seed(stage),
            backends=dict(self.recipe.backends),
            workdir=store.work_dir,
            cache_dir=self.runs_dir / self.recipe.name / ".cache",
            upstream=self._upstream(entry),
        )

    def _hub_data(self, ref: Any) -> Path:
        """A hub:// input as a saved dataset, fetched once per runs folder (`factory.hub_inputs`)."""
        from factory.hub_inputs import materialize

        return materialize(ref, self.runs_dir / self.recipe.name / ".cache" / "hub")

    def _input_record(self, entry: Any, n: str) -> dict[str, Any]:
        if n in entry.hub:
            from factory.hub_inputs import describe

            data = self._hub_data(entry.hub[n])
            return {
                **describe(entry.hub[n]),
                "fingerprint": hub_fingerprint(entry.hub[n]),
                "path": str(data.parent),
                "content_hash": content_hash(data),
            }
        return {
            "fingerprint": self.fingerprints[n],
            "path": str(self.store(n).dir),
            "content_hash": self.store(n).marker()["content_hash"],
        }

    def _run_stage(self, stage: str, store: StageStore, bars: Any) -> StageSummary:
        import datasets

        datasets.disable_progress_bars()
        entry = self.recipe.stages[stage]
        started = time.time()
        for name in entry.stage_inputs():
            if not self.store(name).is_complete():
                raise StageError(f"stages.{stage}.inputs: '{name}' has not been built")
            damage = self._damage(name, self.store(name))
            if damage:
                raise StageError(f"stages.{stage}.inputs: '{name}' is damaged: {damage}; rebuild it (--force {name})")
        def data(n: str) -> str:
            return str(self._hub_data(entry.hub[n]) if n in entry.hub else self.store(n).data_dir)

        for role, n in sources(entry.roles):
            if n in entry.hub:  # a published dataset's columns are known only now
                check_columns(stage, role, n, entry.spec.roles(entry.options)[role], load_input(data(n)).column_names)
        input_paths = {
            role: {n: data(n) for n in v} if isinstance(v, list) else data(v) for role, v in entry.roles.items()
        }
        ctx = self._context(stage, store)
        plan = store.load_plan()
        if plan is None:
            if entry.spec.plan is not None:
                inputs = load_inputs(input_paths)
                try:
                    plan = list(entry.spec.plan(entry.options, inputs, ctx))
                except FactoryError:
                    raise
                except Exception as exc:
                    (store.dir / "error.log").write_text(traceback.format_exc())
                    raise StageError(
                        f"stages.{stage}: planning failed: {type(exc).__name__}: {exc} "
                        f"(traceback in {store.dir / 'error.log'})"
                    ) from exc
            else:
                plan = [None]
            store.save_plan(plan)
        done = store.done_batches()
        done_rows = sum(store.batch_meta(i)["rows"] for i in done)
        if done:
            log.info("%s: resuming, %d of %d batches already done", stage, len(done), len(plan))
        tasks = []
        for index, batch in enumerate(plan):
            if index in done:
                continue
            task_ctx = StageContext(
                **{**ctx.__dict__, "batch": batch, "batch_index": index, "num_batches": len(plan), "metrics": {}}
            )  # each batch counts its own metrics (a shared dict would add earlier batches' counts again)
            tasks.append(BatchTask(entry.uses, entry.options, input_paths, task_ctx))
        bar = BatchProgress(bars, stage, len(plan), len(done), done_rows)
        try:
            for result in self.executor.map(tasks):
                _check_outputs(stage, entry, result)
                store.save_batch(result.index, result.table, result.failures, result.metrics, result.extras)
                bar.advance(result.table.num_rows)
        except FactoryError:
            raise
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            kept = len(store.done_batches())
            (store.dir / "error.log").write_text(traceback.format_exc())
            raise StageError(
                f"stages.{stage}: {type(exc).__name__}: {exc} ({kept}/{len(plan)} batches kept, "
                f"traceback in {store.dir / 'error.log'}; rerun to resume)"
            ) from exc
        return self._finish(stage, store, plan, started, resumed=bool(done))

    def _finish(self, stage: str, store: StageStore, plan: list[Any], started: float, resumed: bool) -> StageSummary:
        import pyarrow as pa
        from datasets import Dataset

        entry = self.recipe.stages[stage]
        tables, failures, metrics = [], [], {}
        extra_tables: dict[str, list] = {}
        for index in range(len(plan)):
            table, fails, meta = store.load_batch(index)
            tables.append(table)
            for name, extra in store.load_batch_extras(index).items():
                extra_tables.setdefault(name, []).append(extra)
            failures += [
                {
                    "batch": index,
                    "reason": str(f["reason"]),
                    "record": _json({k: v for k, v in f.items() if k != "reason"}),
                }
                for f in fails
            ]
            for k, v in meta["metrics"].items():
                metrics[k] = metrics.get(k, 0.0) + v
        # one chunk, so the bytes written do not depend on how the work was split into batches (costs one copy
        # of the output in memory; a streaming writer with fixed record batches would avoid it)
        table = pa.concat_tables(tables, promote_options="default").combine_chunks()
        dataset = Dataset(table, fingerprint=store.fingerprint)
        extras = {
            name: Dataset(
                pa.concat_tables(parts, promote_options="default").combine_chunks(),
                fingerprint=f"{store.fingerprint}-{name}",
            )
            for name, parts in extra_tables.items()
        }
        failures_ds = Dataset.from_list(failures) if failures else None
        summary: dict[str, Any] = {}
        if entry.spec.summarize is not None:
            artifacts = store.dir / "artifacts"
            artifacts.mkdir(exist_ok=True)
            ctx = self._context(stage, store)
            summary = entry.spec.summarize(entry.options, {"data": dataset, **extras}, ctx, artifacts) or {}
        reasons: dict[str, int] = {}
        for f in failures:
            reasons[f["reason"]] = reasons.get(f["reason"], 0) + 1
        seconds = time.time() - started
        manifest = {
            "recipe": {"name": self.recipe.name, "version": self.recipe.version, "path": str(self.recipe.path)},
            "stage": stage,
            "uses": entry.uses,
            "stage_version": entry.spec.version,
            "fingerprint": store.fingerprint,
            "fingerprint_payload": stage_payload(self.recipe, stage, self.fingerprints),
            "config": entry.options.model_dump(mode="json"),
            "semantic_config": semantic_dump(entry.options),
            "inputs": {n: self._input_record(entry, n) for n in entry.inputs},
            "roles": {r: list(v) if isinstance(v, list) else v for r, v in entry.roles.items()},
            "seed": {"recipe": self.recipe.seed, "stage": self.recipe.stage_seed(stage)},
            "versions": library_versions(),
            "platform": platform.platform(),
            "executor": self.executor.name,
            **({"cluster": self.executor.report(stage)} if hasattr(self.executor, "report") else {}),
            "rows": dataset.num_rows,
            "outputs": {"data": dataset.num_rows, **{n: d.num_rows for n, d in extras.items()}},
            "summary": summary,
            "columns": dataset.column_names,
            "features": dataset.features.to_dict(),
            "failures": len(failures),
            "failure_reasons": reasons,
            "metrics": metrics,
            "batches": len(plan),
            "resumed": resumed,
            "timings": {
                "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "seconds_this_run": round(seconds, 3),
            },
        }
        store.finalize(dataset, failures_ds, manifest, extras)
        (store.dir / "error.log").unlink(missing_ok=True)
        return StageSummary(
            stage, store.fingerprint, dataset.num_rows, len(failures), seconds, "resumed" if resumed else "built"
        )


def _check_outputs(stage: str, entry: Any, result: Any) -> None:
    """A batch must write what the stage declares (OUTPUTS): its columns and types, and no undeclared dataset."""
    from datasets import Features

    declared = entry.spec.outputs(entry.options)
    for name, table in (("data", result.table), *result.extras.items()):
        if name not in declared:
            raise StageError(f"stages.{stage}: wrote a dataset '{name}' that its stage does not declare in OUTPUTS")
        problem = declared[name].mismatch(Features.from_arrow_schema(table.schema))
        if problem:
            raise StageError(f"stages.{stage}: output '{name}' {problem}, against the stage's OUTPUTS")


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
