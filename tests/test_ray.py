"""The Ray executor on a real two-node Ray cluster on 127.0.0.1: the same bytes as a local build for CPU and LLM
stages, faults (a worker node killed, the driver killed) survived, and an engine error is a failure row.

The cluster is two `ray start` processes (a head and a worker node, one CPU each), each in its own process group,
so the fixture stops exactly what it started. Most tests carry the `ray` marker (`make test-ray`); the default run
keeps the quick ones.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import ROOT, TESTS, factory_subprocess

from factory.recipe import load_recipe
from factory.runner import Runner

ray = pytest.importorskip("ray")
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """Two `ray start --block` processes, each its own process group: stopping the group stops that node."""

    def __init__(self):
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.tmp = Path(tempfile.mkdtemp(prefix="rf", dir="/tmp"))  # short: Ray's socket paths must stay short
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)]),
            "RAY_USAGE_STATS_ENABLED": "0",
            "OMP_NUM_THREADS": "1",
            "RAY_AUTH_MODE": "disabled",  # a throwaway cluster on 127.0.0.1; its drivers are this session's
        }
        self.head = self._start("head", "--head", f"--port={self.port}", "--include-dashboard=false")
        self._wait_for_port()
        self.worker = self.start_worker()

    def _start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "ab")
        return subprocess.Popen(
            [RAY, "start", *args, "--num-cpus=1", "--node-ip-address=127.0.0.1", f"--temp-dir={self.tmp / name}",
             "--block", "--disable-usage-stats"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def _wait_for_port(self) -> None:
        deadline = time.time() + 60
        while time.time() < deadline:
            assert self.head.poll() is None, (self.tmp / "head.log").read_text()
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.2)
        raise AssertionError("the Ray head did not start")

    def start_worker(self) -> subprocess.Popen:
        self.worker = self._start("worker", f"--address={self.address}")
        return self.worker

    def wait_for_nodes(self, n: int) -> None:
        deadline = time.time() + 60
        while sum(1 for node in ray.nodes() if node["Alive"]) < n:
            assert time.time() < deadline, f"the cluster never had {n} nodes"
            time.sleep(0.2)

    def worker_raylet(self) -> int:
        """The worker node's raylet: the process of the worker's group whose command is the raylet."""
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if os.getpgid(int(pid)) != self.worker.pid:
                    continue
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            except (OSError, ProcessLookupError):
                continue
            if cmd.endswith(b"raylet"):
                return int(pid)
        raise AssertionError("no raylet in the worker node's process group")

    @staticmethod
    def _stop(proc: subprocess.Popen) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                continue
            time.sleep(1)  # the group's other members (the raylet's workers) go with it

    def stop(self) -> None:
        self._stop(self.worker)
        self._stop(self.head)


@pytest.fixture(scope="session")
def cluster():
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # this process and the `factory` subprocesses connect without a token
    c = Cluster()
    try:
        ray.init(address=c.address, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": c.env["PYTHONPATH"]}})
        c.wait_for_nodes(2)
        yield c
    finally:
        ray.shutdown()
        c.stop()
        shutil.rmtree(c.tmp, ignore_errors=True)
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def build(path: Path, runs: Path, executor: str = "local", **kw) -> Runner:
    from factory.runner import executor_for

    recipe = load_recipe(path)
    runner = Runner(recipe, runs_dir=runs, progress=False, executor=executor_for(recipe, executor))
    runner.build(**kw)
    return runner


def same_outputs(a: Runner, b: Runner, stage: str, *datasets: str) -> None:
    assert a.fingerprints[stage] == b.fingerprints[stage]
    for name in ("data", *datasets):
        left, right = a.store(stage).dir / name, b.store(stage).dir / name
        assert files_of(left) == files_of(right), f"{stage}/{name} differs between executors"


# --- the executor block is operational ------------------------------------------------------------------------
RAY_BLOCK = """\
executor:
  type: ray
  max_retries: 2
  stages: {people: {num_cpus: 1}}
  backends: {tiny: {replicas: 2, num_cpus: 1}}
"""


def test_the_executor_block_never_changes_a_fingerprint(tmp_path, tiny_path):
    plain = _personas_recipe(tmp_path, tiny_path, name="plain.yaml")
    with_block = _personas_recipe(tmp_path, tiny_path, name="block.yaml", extra=RAY_BLOCK)
    a, b = load_recipe(plain), load_recipe(with_block)
    assert b.executor.type == "ray" and b.executor.backends["tiny"].replicas == 2
    from factory.fingerprint import recipe_fingerprints

    assert recipe_fingerprints(a) == recipe_fingerprints(b)


def test_the_executor_block_names_known_stages_and_backends(write_recipe):
    from factory.errors import RecipeError

    path = write_recipe("name: x\nstages: {q: {uses: questions, sets: [election]}}\nexecutor: {stages: {qq: {}}}\n")
    with pytest.raises(RecipeError, match=r"executor.stages.qq: unknown stage 'qq' \(did you mean 'q'\?\)"):
        load_recipe(path)


# --- CPU stages: Ray tasks, inputs through the object store ----------------------------------------------------
def test_meta_personas_on_ray_equals_local(cluster, write_recipe, tmp_path):
    path = write_recipe(
        "name: m\nseed: 1\nstages:\n  people: {uses: meta_personas, geographies: [NY, DC, WY, VT], "
        "n_per_geography: 300}\n  calibrated: {uses: calibrate, inputs: [people]}\n"
        "  election: {uses: questions, sets: [election]}\n"  # lists of empty structs: Ray's own reducer trims them
    )
    local = build(path, tmp_path / "local")
    remote = build(path, tmp_path / "ray", "ray")
    same_outputs(local, remote, "people", "fidelity")
    same_outputs(local, remote, "calibrated")
    same_outputs(local, remote, "election")
    manifest = remote.store("people").manifest()
    assert manifest["executor"] == "ray" and manifest["cluster"]["nodes"] == 2
    assert manifest["cluster"]["stage_resources"]["tasks"] == 4


TOY = """\
name: toy
seed: 3
stages:
  a: {uses: "toy_stages:counter", n_rows: 40, batch_size: 4, sleep_s: SLEEP}
  b: {uses: "toy_stages:counter", inputs: [a], n_rows: 4}
"""


def test_a_stage_error_on_ray_is_the_same_one_line(cluster, write_recipe, tmp_path, cli):
    path = write_recipe(TOY.replace("SLEEP", "0"))
    result = cli("build", path, "stages.a.crash_at_batch=2", "--executor", "ray", "--address", cluster.address,
                 "--runs-dir", tmp_path / "runs", "--no-progress")  # fmt: skip
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "stages.a: RuntimeError: boom at batch 2 (9/10 batches kept" in lines[0]


def test_independent_stages_run_at_the_same_time_and_write_what_a_local_build_writes(cluster, write_recipe, tmp_path):
    # a and b each wait (60 s at most) for the other to sign in: the build passes only if they run at once
    (tmp_path / "meet").mkdir()
    meet = f"meet: [a, b], rendezvous: {tmp_path / 'meet'}"
    text = f"""\
name: both
seed: 5
stages:
  a: {{uses: "toy_stages:counter", n_rows: 6, batch_size: 6, {meet}}}
  b: {{uses: "toy_stages:counter", n_rows: 8, batch_size: 8, {meet}}}
  c: {{uses: "toy_stages:counter", inputs: [a, b], n_rows: 4}}
"""
    remote = build(write_recipe(text), tmp_path / "ray", "ray")
    local = build(write_recipe(text.replace(meet, "meet: []"), "local.yaml"), tmp_path / "local")  # operational
    for stage in "abc":
        same_outputs(local, remote, stage)


@pytest.mark.ray
def test_a_worker_node_killed_mid_stage_loses_nothing(cluster, write_recipe, tmp_path):
    path = write_recipe(TOY.replace("SLEEP", "1.0"))
    runner = Runner(load_recipe(path), runs_dir=tmp_path / "ray", progress=False)
    proc = factory_subprocess("build", path, "--executor", "ray", "--address", cluster.address,
                              "--runs-dir", tmp_path / "ray", "--no-progress", background=True)  # fmt: skip
    try:
        deadline = time.time() + 120
        while len(runner.store("a").done_batches()) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "no progress"
            time.sleep(0.05)
        os.kill(cluster.worker_raylet(), signal.SIGKILL)  # the worker node goes, with the batch it was running
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
        cluster._stop(cluster.worker)
        cluster.start_worker()
        cluster.wait_for_nodes(2)
    local = build(path, tmp_path / "local")
    same_outputs(local, runner, "a")
    same_outputs(local, runner, "b")


# --- LLM stages: replica pools ------------------------------------------------------------------------------------
def _personas_recipe(tmp_path, tiny_path, name: str = "p.yaml", extra: str = "", stage: str = "") -> Path:
    path = tmp_path / name
    path.write_text(f"""\
name: p
seed: 0
backends:
  tiny: {{type: transformers, model: "{tiny_path}", batch_size: 4}}
stages:
  people: {{uses: meta_personas, geographies: [WY, DC], n_per_geography: 40}}
  personas:
    uses: personas
    inputs: [people]
    backend: tiny
    sample: 6
    batch_size: 2
    max_tokens: 160
    max_retries: 2
    reflection_turns: 2
{stage}{extra}""")
    return path


@pytest.mark.ray
def test_personas_on_replicas_equal_local(cluster, tmp_path, tiny_path, one_thread):
    path = _personas_recipe(tmp_path, tiny_path, extra=RAY_BLOCK)
    local = build(path, tmp_path / "local")
    remote = build(path, tmp_path / "ray", "ray")
    same_outputs(local, remote, "personas", "drift")
    manifest = remote.store("personas").manifest()
    assert manifest["metrics"]["backend_calls"] == local.store("personas").manifest()["metrics"]["backend_calls"]
    assert sum(manifest["metrics"].get(f"retries.{s}", 0) for s in ("objective_table", "subjective_table")) > 0
    replicas = manifest["cluster"]["pools"]["tiny"]["replicas"]
    assert len(replicas) == 2 and all(r["requests"] > 0 for r in replicas.values())
    assert len({r["node"] for r in replicas.values()}) == 2  # one replica per node
    # failures: the same persons and styles fail; a failed answer's raw text (garbage the tiny model ran on with)
    # may differ late in the text, as it does between batch sizes locally: its neighbours in the engine differ
    assert _failed(local) == _failed(remote)


def test_replicas_that_cannot_fit_on_the_cluster_are_one_line(cluster, tmp_path, tiny_path, cli):
    path = _personas_recipe(tmp_path, tiny_path, extra="executor:\n  backends: {tiny: {replicas: 3, num_cpus: 1}}\n")
    result = cli("build", path, "--address", cluster.address, "--runs-dir", tmp_path / "runs", "--no-progress")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(
        "executor.backends.tiny: 3 replica(s) of 1 CPU(s) and 0 GPU(s) each do not fit on the cluster's 2 node(s) "
        "(2 would); lower replicas, num_cpus or num_gpus"
    ), lines


@pytest.mark.ray
def test_one_replica_runs_in_lockstep_and_writes_a_local_builds_bytes_in_bfloat16(cluster, tmp_path, tiny_path):
    # bfloat16 sums move with the batch's make-up: only an engine that sees each request and follow-up (retries,
    # reflective turns) at the very step a local one does writes the same text
    block = "executor:\n  backends: {tiny: {replicas: 1, num_cpus: 1}}\n"
    path = _personas_recipe(tmp_path, tiny_path, extra=block)
    path.write_text(path.read_text().replace("batch_size: 4}", "batch_size: 4, dtype: bfloat16}"))
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the replica's one CPU
    try:
        local = build(path, tmp_path / "local")
    finally:
        torch.set_num_threads(before)
    remote = build(path, tmp_path / "ray", "ray")
    same_outputs(local, remote, "personas", "drift", "failures")
    assert remote.store("personas").manifest()["metrics"]["backend_calls"] > 12  # retries and reflective turns ran


def _failed(runner: Runner) -> list[tuple[str, str]]:
    import json

    from datasets import load_from_disk

    folder = runner.store("personas").failures_dir
    if not folder.exists():
        return []
    return sorted((json.loads(r)["person_id"], json.loads(r)["style"]) for r in load_from_disk(str(folder))["record"])


@pytest.fixture
def one_thread():
    """torch on one thread, as in a replica that reserves one CPU: a CPU matmul's bits depend on how many threads
    split its sums, so a local build compares bit for bit only with engines on as many threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.ray
@pytest.mark.parametrize("mode", ["logprob", "fast"])
def test_answers_on_replicas_equal_local(cluster, tmp_path, tiny_path, mode, one_thread):
    files = ""
    if mode == "logprob":  # one prompt longer than the model's context: failure rows on both, the rest the same
        (tmp_path / "huge.csv").write_text(f"id,topic,question,options\nhuge,essay,{'Why? ' * 1100},Yes|No\n")
        files = f", files: [{tmp_path / 'huge.csv'}]"
    stage = f"""\
  election: {{uses: questions, sets: [election]{files}}}
  votes:
    uses: answers
    inputs: {{people: people, questions: election}}
    backend: tiny
    mode: {mode}
    styles: [meta, base]
    sample: 10
    batch_size: 4
    shuffle_options: true
"""
    path = _personas_recipe(tmp_path, tiny_path, extra=RAY_BLOCK, stage=stage)
    local = build(path, tmp_path / "local", only=["people", "election", "votes"])
    remote = build(path, tmp_path / "ray", "ray", only=["people", "election", "votes"])
    same_outputs(local, remote, "votes", *(["failures"] if files else []))
    if files:
        assert remote.store("votes").manifest()["failures"] == 20  # the huge question, 10 people x 2 styles
    replicas = remote.store("votes").manifest()["cluster"]["pools"]["tiny"]["replicas"]
    assert sum(r["requests"] + r["scored"] for r in replicas.values()) > 0


@pytest.mark.ray
def test_a_killed_driver_resumes_without_asking_cached_requests_again(cluster, tmp_path, tiny_path, one_thread):
    path = _personas_recipe(tmp_path, tiny_path, extra=RAY_BLOCK)
    runs = tmp_path / "ray"
    runner = Runner(load_recipe(path), runs_dir=runs, progress=False)
    cache = runner.store("personas").work_dir / "requests.sqlite"
    proc = factory_subprocess("build", path, "--address", cluster.address, "--runs-dir", runs, "--no-progress",
                              background=True)  # fmt: skip
    try:
        deadline = time.time() + 240
        while _cached(cache) < 6:
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "no answer came back"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not runner.store("personas").is_complete()
    answered = _cached(cache)
    resumed = factory_subprocess("build", path, "--address", cluster.address, "--runs-dir", runs, "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    local = build(path, tmp_path / "local")
    same_outputs(local, runner, "personas", "drift")
    total = local.store("personas").manifest()["metrics"]["backend_calls"]
    metrics = runner.store("personas").manifest()["metrics"]
    # batches kept from the killed run carry their own counts; what the rerun asked is what was not cached
    assert metrics["backend_calls"] < total and answered >= 6
    assert metrics["backend_calls"] + metrics.get("requests_cached", 0) >= total


def _cached(path: Path) -> int:
    import sqlite3

    if not path.exists():
        return 0
    try:
        with sqlite3.connect(str(path), timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM results").fetchone()[0])
    except sqlite3.Error:
        return 0


@pytest.mark.ray
def test_a_request_that_raises_in_a_replica_is_a_failure_row(cluster, tmp_path, tiny_path):
    # a schema xgrammar cannot compile makes the engine raise on those requests, and only on those
    (tmp_path / "bad.json").write_text('{"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}')
    (tmp_path / "bad.jinja").write_text("Describe {{ facts }} as JSON.")
    extra = (
        "    styles: [objective_table, broken]\n"
        "    templates: {broken: {template: bad.jinja, schema_file: bad.json}}\n"
    )
    path = _personas_recipe(tmp_path, tiny_path, extra=extra + RAY_BLOCK)
    remote = build(path, tmp_path / "ray", "ray")
    failures = remote.store("personas").failures_dir
    from datasets import load_from_disk

    reasons = load_from_disk(str(failures))["reason"]
    broken = [r for r in reasons if r.startswith("backend error:")]
    assert len(broken) == 6, reasons  # every person's broken style, after its retries
    data = load_from_disk(str(remote.store("personas").data_dir)).to_pandas()
    assert set(data["style"]) <= {"objective_table"}
    plain = _personas_recipe(tmp_path, tiny_path, name="plain.yaml", extra="    styles: [objective_table]\n")
    local = build(plain, tmp_path / "local")
    mine = data.drop(columns=[]).reset_index(drop=True)
    theirs = load_from_disk(str(local.store("personas").data_dir)).to_pandas()
    assert mine.equals(theirs)  # the rows of the other style are what a build without the broken one writes
