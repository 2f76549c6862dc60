"""Peak memory of sampling a large local dataset with the `dataset` stage, against loading it whole.

Writes a 1,000,000-row parquet file in the Nemotron-Personas shape (persona texts of a few hundred characters,
row groups of 65,536 rows), then, each in a fresh process, draws a seeded sample of 10,000 rows and maps it onto
the people role, and prints peak resident memory (`resource.getrusage(...).ru_maxrss`), the most resident memory
the method added above what the process held after importing the libraries (the same imports in every process;
VmRSS polled every 5 ms), and time per method:

    imports only          python with pyarrow, datasets, pandas and the factory imported: every method's floor
    dataset stage         `factory build` of a recipe with `uses: dataset` and `sample: 10000` (the user's path)
    stage reader          factory.external.source/reader/mapping alone: count rows, draw positions, take, map
    stage reader, texts   the same, mapping the persona texts (the file's largest column) as personas
    naive pandas          pandas.read_parquet of the whole file, then DataFrame.sample
    datasets, whole       datasets.Dataset.from_parquet (converted to its Arrow cache), then .select

    python bench/dataset_sampling.py               # 1,000,000 rows
    python bench/dataset_sampling.py --rows 200000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPING = """\
    columns: {uuid: person_id, sex: sex, age: age, state: geography, education_level: education}
    values:
      education: {high_school: "High school graduate (includes equivalency)", bachelors: "Bachelor's degree",
                  graduate: "Graduate or professional degree", some_college: "Some college, no degree"}
"""


def write_parquet(path: Path, rows: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    writer = None
    step = 65_536
    for start in range(0, rows, step):
        n = min(step, rows - start)
        words = np.array(["quiet", "nurse", "garden", "chess", "river", "teacher", "jazz", "welding", "maps"])
        text = [" ".join(rng.choice(words, 50)) for _ in range(n)]
        table = pa.table(
            {
                "uuid": [f"{start + i:016x}" for i in range(n)],
                "persona": text,
                "professional_persona": text,
                "sex": rng.choice(["Male", "Female"], n),
                "age": rng.integers(18, 95, n),
                "education_level": rng.choice(["high_school", "bachelors", "graduate", "some_college"], n),
                "state": rng.choice(["NY", "CA", "TX", "WY"], n),
            }
        )
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=step)
    writer.close()


CHILD = {
    "imports only": """
        import pyarrow, pyarrow.dataset, datasets, pandas
        import factory.external.mapping, factory.external.reader, factory.external.source
    """,
    "stage reader": """
        from factory.options import DataFile
        from factory.external import mapping, reader, roles, source
        m = mapping.Mapping("data.parquet", roles.role("people"), {"person_id": "uuid", "sex": "sex", "age": "age",
            "geography": "state"}, {}, {})
        parts = source.open_parts(DataFile("data.parquet", WORK / "data.parquet"), None, None, None)
        chosen = reader.selection("data.parquet", sum(p.num_rows for p in parts), SAMPLE, 0)
        table, rows = reader.read(parts, chosen, ["uuid", "sex", "age", "state"])
        assert len(mapping.apply(m, table, rows)) == SAMPLE
    """,
    "stage reader, texts": """
        from factory.options import DataFile
        from factory.external import mapping, reader, roles, source
        m = mapping.Mapping("data.parquet", roles.role("personas"), {"person_id": "uuid", "persona": "persona"}, {},
            {"style": "nemotron"})
        parts = source.open_parts(DataFile("data.parquet", WORK / "data.parquet"), None, None, None)
        chosen = reader.selection("data.parquet", sum(p.num_rows for p in parts), SAMPLE, 0)
        table, rows = reader.read(parts, chosen, ["uuid", "persona"])
        assert len(mapping.apply(m, table, rows)) == SAMPLE
    """,
    "naive pandas": """
        import pandas as pd
        df = pd.read_parquet(WORK / "data.parquet")
        assert len(df.sample(n=SAMPLE, random_state=0)) == SAMPLE
    """,
    "datasets, whole": """
        import datasets
        ds = datasets.Dataset.from_parquet(str(WORK / "data.parquet"), cache_dir=str(WORK / "hf"))
        import numpy as np
        assert len(ds.select(np.sort(np.random.default_rng(0).choice(len(ds), SAMPLE, replace=False)))) == SAMPLE
    """,
}


CHILD_ORDER = ["imports only", "dataset stage", "stage reader", "stage reader, texts", "naive pandas"]
CHILD_ORDER += ["datasets, whole"]


# every method's process imports the same libraries first, so "added" is what the method itself needs
PRELUDE = (
    "import pyarrow, pyarrow.dataset, pyarrow.parquet, datasets, pandas, factory.cli\n"
    "import factory.external.mapping, factory.external.reader, factory.external.source, factory.stages.dataset\n"
)

# resident memory now (VmRSS), polled every 5 ms while the method runs: its highest value above the start is what
# the method added (ru_maxrss alone cannot tell, when importing the libraries peaked higher than the work)
SAMPLER = """
import threading
def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
start = rss(); high = [start]; stop = threading.Event()
def poll():
    while not stop.wait(0.005):
        high[0] = max(high[0], rss())
watch = threading.Thread(target=poll); watch.start()
"""


def measure(name: str, work: Path, sample: int) -> tuple[float, float, float]:
    """(peak RSS in MB, MB added over the imports, seconds) of one method in a fresh process."""
    if name == "dataset stage":
        recipe = work / "recipe.yaml"
        recipe.write_text(
            "name: bench\nstages:\n  people:\n    uses: dataset\n    from: data.parquet\n    role: people\n"
            + MAPPING
            + f"    sample: {sample}\n"
        )
        body = (
            "from click.testing import CliRunner\nfrom factory.cli import main\n"
            f"r = CliRunner().invoke(main, ['build', {str(recipe)!r}, '--runs-dir', {str(work / 'runs')!r}, "
            "'--force', 'people'])\nassert r.exit_code == 0, r.output\n"
        )
    else:
        body = textwrap.dedent(CHILD[name])
    header = f"import resource, time, json\nfrom pathlib import Path\nWORK = Path({str(work)!r})\nSAMPLE = {sample}\n"
    report = (
        "stop.set(); watch.join()\nprint(json.dumps([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "
        "(high[0] - start) / 1024, time.perf_counter() - t0]))\n"
    )
    code = header + PRELUDE + SAMPLER + "t0 = time.perf_counter()\n" + body + "\n" + report
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{name} failed:\n{out.stderr}")
    peak, added, seconds = json.loads(out.stdout.strip().splitlines()[-1])
    return peak, added, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        write_parquet(work / "data.parquet", args.rows)
        size = (work / "data.parquet").stat().st_size / 2**20
        took = time.perf_counter() - t0
        print(f"{args.rows:,} rows, {size:.0f} MB parquet (written in {took:.0f}s); sample {args.sample:,}")
        print("| method | peak RSS (MB) | added over imports (MB) | time (s) |\n|---|---|---|---|")
        for name in CHILD_ORDER:
            peak, added, seconds = measure(name, work, args.sample)
            print(f"| {name} | {peak:,.0f} | {added:,.0f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
