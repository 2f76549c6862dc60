"""Answer cost by mode: `logprob` vs `fast` vs `reason` on the same persons and questions, and how well the
`logprob` distribution agrees with the empirical distribution of many `fast` samples.

    .venv/bin/python bench/answer_modes.py [--persons 8] [--questions 6] [--samples 20] [--tiny]

Each mode is one `answers` stage built by the runner (rendering, request cache, parsing, checkpointing included)
on the embedded SmolLM2-135M-Instruct (or a tiny random model with --tiny). Prints seconds per answer and per
person x question (what one distribution costs: `logprob` gives it in one answer, `fast_many` from --samples
answers), tokens out per answer, the invalid share, and for agreement the mean total variation between each
person's `logprob` distribution and their `fast` sample distribution, plus the same for the population shares per
question.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).resolve().parent)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=8)
    parser.add_argument("--questions", type=int, default=6, help="OpinionQA questions (plus the 3 election ones)")
    parser.add_argument("--samples", type=int, default=20, help="fast samples per person and question")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()

    import datasets
    import numpy as np
    from tables import model_recipe, print_table

    from factory.recipe import load_recipe
    from factory.runner import Runner

    datasets.disable_progress_bars()
    tmp = Path(tempfile.mkdtemp(prefix="factory-answers-bench-"))
    try:
        common = "inputs: [people, qs], backend: m, batch_size: 1000"
        recipe = model_recipe(
            tmp,
            args.tiny,
            args.batch_size,
            f"""\
  people: {{uses: meta_personas, geographies: [OH], n_per_geography: {args.persons}, bigfive: {{mode: none}}}}
  qs: {{uses: questions, sets: [election, opinionqa], with_human_distribution: false, sample: {args.questions + 3}}}
  warmup: {{uses: answers, {common}, mode: fast, sample: 1}}
  logprob: {{uses: answers, {common}, mode: logprob}}
  fast: {{uses: answers, {common}, mode: fast}}
  reason: {{uses: answers, {common}, mode: reason, max_tokens: 120}}
  fast_many: {{uses: answers, {common}, mode: fast, samples: {args.samples}}}
""",
        )
        runner = Runner(load_recipe(recipe), runs_dir=tmp / "runs", progress=False)
        runner.build(only=["people", "qs", "warmup"])  # loads the model and warms its kernels up
        rows, frames = [], {}
        for mode in ("logprob", "fast", "reason", "fast_many"):
            runner.build(only=[mode])
            store = runner.store(mode)
            seconds = store.manifest()["timings"]["seconds_this_run"]
            df = datasets.load_from_disk(str(store.data_dir)).to_pandas()
            df = df[df["mode"] != "free_text"]
            frames[mode] = df
            pairs = df.groupby(["person_id", "question_id"]).ngroups  # one distribution each (or 1 sample)
            rows.append([mode, len(df), f"{seconds:.1f}", f"{1000 * seconds / len(df):.0f}",
                         f"{1000 * seconds / pairs:.0f}", f"{df['completion_tokens'].mean():.1f}",
                         f"{1 - df['valid'].mean():.1%}"])  # fmt: skip
        base = float(rows[1][3])
        for r in rows:
            r.append(f"{base / float(r[3]):.1f}x")
        print_table(
            f"Answer cost by mode ({args.persons} persons x {args.questions + 3} questions, "
            f"{'tiny model' if args.tiny else 'embedded SmolLM2-135M'}, CPU)",
            ["mode", "answers", "stage s", "ms/answer", "ms/person x question", "tokens out", "invalid", "vs fast"],
            rows,
        )
        # agreement: each person's logprob distribution vs the empirical distribution of their fast samples
        lp, many = frames["logprob"], frames["fast_many"]
        tvs, pop = [], []
        for (pid, qid), group in many.groupby(["person_id", "question_id"]):
            dist = np.asarray(lp[(lp.person_id == pid) & (lp.question_id == qid)]["distribution"].iloc[0])
            valid = group[group["valid"]]
            if len(valid):
                emp = np.bincount(valid["choice"].astype(int), minlength=len(dist)) / len(valid)
                tvs.append(0.5 * np.abs(dist - emp).sum())
        for qid, group in many.groupby("question_id"):
            dists = np.stack(lp[lp.question_id == qid]["distribution"].map(np.asarray).to_list())
            valid = group[group["valid"]]
            if len(valid):
                emp = np.bincount(valid["choice"].astype(int), minlength=dists.shape[1]) / len(valid)
                pop.append(0.5 * np.abs(dists.mean(0) - emp).sum())
        print_table(
            f"logprob vs {args.samples} fast samples (valid samples only; total variation, 0 = identical)",
            ["level", "pairs", "mean TV", "median TV"],
            [
                ["person x question", len(tvs), f"{np.mean(tvs):.3f}", f"{np.median(tvs):.3f}"],
                ["question (population)", len(pop), f"{np.mean(pop):.3f}", f"{np.median(pop):.3f}"],
            ],
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
