"""Ray executor scaling: a CPU stage (meta_personas) and an LLM stage (personas on the tiny test model), local vs
Ray with 1 worker (the overhead) and Ray with 1 vs 2 workers (the speed-up); replica utilisation from the manifest.

    .venv/bin/python bench/ray_scaling.py                       # 51 geographies x 100,000 persons, 16 personas
    .venv/bin/python bench/ray_scaling.py --geographies 12 --n 20000 --persons 8

Each measurement is a fresh process and a fresh runs folder; "workers" are CPUs of a Ray cluster started in that
process (`ray.init(num_cpus=...)`), so on a 2-core machine 2 workers is the whole machine. Times are the stage's
own (the runner's summary), including Ray's worker start-up and, for LLM stages, loading each replica's model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATES = (
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC ND OH OK "
    "OR PA RI SC SD TN TX UT VT VA WA WV WI WY"
).split()


def recipe(kind: str, args: argparse.Namespace, workdir: Path, replicas: int) -> Path:
    if kind == "meta":
        geos = ", ".join(STATES[: args.geographies])
        text = f"""\
name: bench_meta
stages:
  people: {{uses: meta_personas, geographies: [{geos}], n_per_geography: {args.n}}}
"""
    else:
        model = workdir.parent / "tiny"
        if not model.exists():
            sys.path.insert(0, str(ROOT / "tests"))
            from tiny_model import build_tiny_model

            build_tiny_model(model)
        text = f"""\
name: bench_personas
backends:
  tiny: {{type: transformers, model: "{model}", batch_size: 8}}
stages:
  people: {{uses: meta_personas, geographies: [WY], n_per_geography: 200}}
  personas:
    uses: personas
    inputs: [people]
    backend: tiny
    sample: {args.persons}
    batch_size: {max(1, args.persons // 4)}
    max_tokens: 200
    styles: [objective_table, subjective_table, descriptive, reflective]
executor:
  backends: {{tiny: {{replicas: {replicas}, num_cpus: 1}}}}
"""
    path = workdir / f"{kind}.yaml"
    path.write_text(text)
    return path


def one(kind: str, executor: str, workers: int, args: argparse.Namespace, workdir: Path) -> dict:
    """A measurement in this process (called in a child process)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from factory.recipe import load_recipe
    from factory.runner import Runner, executor_for

    path = recipe(kind, args, workdir, workers)
    r = load_recipe(path)
    stage = "people" if kind == "meta" else "personas"
    ex = executor_for(r, executor)
    if executor == "ray":
        import ray

        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    runs = workdir / "runs"
    if kind != "meta":  # the people are not what is measured
        Runner(r, runs_dir=runs, progress=False, executor=executor_for(r, "local")).build(only=["people"])
    started = time.perf_counter()
    summary = {s.stage: s for s in Runner(r, runs_dir=runs, progress=False, executor=ex).build(only=[stage])}
    wall = time.perf_counter() - started
    manifest = Runner(r, runs_dir=runs, progress=False).store(stage).manifest()
    out = {"seconds": summary[stage].seconds, "wall": wall, "rows": summary[stage].rows}
    pools = manifest.get("cluster", {}).get("pools", {})
    if pools:
        reps = next(iter(pools.values()))["replicas"].values()
        out["utilisation"] = [r.get("utilisation") for r in reps]
        out["requests"] = [r.get("requests") for r in reps]
    out["calls"] = manifest["metrics"].get("backend_calls")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--geographies", type=int, default=51)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--persons", type=int, default=16)
    parser.add_argument("--only", choices=["meta", "personas"])
    parser.add_argument("--one", nargs=3, metavar=("KIND", "EXECUTOR", "WORKERS"), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        kind, executor, workers = args.one
        print(json.dumps(one(kind, executor, int(workers), args, Path(args.workdir))))
        return
    base = Path(tempfile.mkdtemp(prefix="ray_scaling"))
    rows = []
    for kind in [k for k in ("meta", "personas") if args.only in (None, k)]:
        for executor, workers in (("local", 1), ("ray", 1), ("ray", 2)):
            workdir = base / f"{kind}-{executor}-{workers}"
            workdir.mkdir()
            sizes = ["--geographies", str(args.geographies), "--n", str(args.n), "--persons", str(args.persons)]
            cmd = [sys.executable, __file__, "--one", kind, executor, str(workers), "--workdir", str(workdir), *sizes]
            env = {**os.environ, "OMP_NUM_THREADS": "1"}  # a worker is one core, and so is the local build
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{kind} {executor} {workers}: failed")
            rows.append((kind, executor, workers, json.loads(done.stdout.strip().splitlines()[-1])))
            print(f"done: {kind} {executor} x{workers}: {rows[-1][3]}", file=sys.stderr)
    what = {
        "meta": f"meta_personas, {args.geographies} geographies x {args.n:,}",
        "personas": f"personas, tiny model, {args.persons} people x 4 styles",
    }
    print("| stage | executor | workers | seconds | vs local | speed-up vs 1 worker | replica utilisation |")
    print("|---|---|---|---|---|---|---|")
    for kind, executor, workers, m in rows:
        local = next(r[3]["seconds"] for r in rows if r[0] == kind and r[1] == "local")
        one_worker = next(r[3]["seconds"] for r in rows if r[0] == kind and r[1] == "ray" and r[2] == 1)
        util = ", ".join(f"{u:.0%}" for u in m.get("utilisation", []) if u is not None) or "-"
        vs_local = f"{m['seconds'] / local - 1:+.1%}" if executor == "ray" else "-"
        speed = f"{one_worker / m['seconds']:.2f}x" if executor == "ray" else "-"
        print(f"| {what[kind]} | {executor} | {workers} | {m['seconds']:.1f} | {vs_local} | {speed} | {util} |")


if __name__ == "__main__":
    main()
