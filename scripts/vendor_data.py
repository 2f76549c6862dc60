"""Regenerate `factory/data/` from the shared data drop (`../shared/data`).

Run once by a maintainer when the shared data changes; the package never reads `../shared` at run time.
Each source is converted losslessly to a compact format (parquet, or gzipped CSV where the Census API
layout itself is what the parser must handle). Provenance and licences live in `factory/data/README.md`.

    python scripts/vendor_data.py [SHARED_DATA_DIR]
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "factory" / "data"


def _parquet(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False, compression="zstd")


def _gzip_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 keeps the archive byte-identical across regenerations.
    with open(src, "rb") as f, gzip.GzipFile(dst, "wb", mtime=0) as g:
        shutil.copyfileobj(f, g)


def census(src: Path) -> None:
    c = src / "census"
    shutil.copy(c / "states.csv", OUT / "census" / "states.csv")
    a18 = c / "acs2018_1yr_state"
    for table in sorted((a18 / "tables").glob("*.csv")):
        _gzip_copy(table, OUT / "census" / "acs2018_1yr_state" / (table.name + ".gz"))
    variables = pd.read_csv(a18 / "acs2018_1yr_variables.csv", dtype=str, keep_default_na=False)
    tables = {p.stem.rsplit("_", 1)[-1] for p in (a18 / "tables").glob("*.csv")}
    variables = variables[variables["GROUP"].isin(tables)]
    _parquet(variables, OUT / "census" / "acs2018_1yr_state" / "variables.parquet")
    marg = pd.read_csv(a18 / "acs2018_1yr_state_persona_marginals.csv", dtype={"state_fips": str})
    _parquet(marg, OUT / "census" / "acs2018_1yr_state" / "persona_marginals.parquet")
    rows = []
    for table_dir in sorted((c / "acs2023_1yr_state_subset").iterdir()):
        for f in sorted(table_dir.glob("*.csv")):
            df = pd.read_csv(f, dtype=str, keep_default_na=False)
            df.insert(0, "table", table_dir.name)
            df.insert(0, "state_po", f.name.split("_")[0].upper())
            df.insert(2, "row", range(len(df)))
            rows.append(df)
    _parquet(pd.concat(rows, ignore_index=True), OUT / "census" / "acs2023_1yr_state_subset.parquet")


def elections(src: Path) -> None:
    for f in (src / "elections").glob("*.csv"):
        shutil.copy(f, OUT / "elections" / f.name)


def opinionqa(src: Path) -> None:
    o = src / "opinionqa"
    for name in ["opinionqa_questions", "opinionqa_overall_distributions", "opinionqa_group_counts"]:
        df = pd.read_csv(
            o / f"{name}.csv", dtype={"option_index": "Int64"}, keep_default_na=False, na_values={"option_index": [""]}
        )
        _parquet(df, OUT / "opinionqa" / f"{name.removeprefix('opinionqa_')}.parquet")
    groups = pd.read_csv(o / "opinionqa_attribute_groups.csv", index_col=0)
    (OUT / "opinionqa" / "attribute_groups.json").write_text(
        json.dumps({k: eval_list(v) for k, v in zip(groups["key"], groups["options"])}, indent=1) + "\n"
    )


def eval_list(text: str) -> list[str]:
    import ast

    return list(ast.literal_eval(text))


def bigfive(src: Path) -> None:
    for f in (src / "bigfive").iterdir():
        shutil.copy(f, OUT / "bigfive" / f.name)


def questions(src: Path) -> None:
    q = src / "questions"
    for f in sorted((q / "seed_topics").glob("*.json")):
        data = json.loads(f.read_text())
        (OUT / "questions" / "seed_topics" / f.name).write_text(json.dumps(data, indent=0, ensure_ascii=False) + "\n")
    shutil.copy(q / "personality_200" / "topics_200.txt", OUT / "questions" / "personality_topics_200.txt")
    df = pd.read_csv(q / "personality_200" / "questions_by_topic.csv", dtype=str, keep_default_na=False)
    _parquet(df, OUT / "questions" / "personality_questions_by_topic.parquet")


def main() -> None:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT.parent / "shared" / "data")
    for sub in ["census/acs2018_1yr_state", "elections", "opinionqa", "bigfive", "questions/seed_topics"]:
        (OUT / sub).mkdir(parents=True, exist_ok=True)
    census(src)
    elections(src)
    opinionqa(src)
    bigfive(src)
    questions(src)
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"vendored {total / 1e6:.1f} MB into {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
