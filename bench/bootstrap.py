"""Cost of the evaluate stage's bootstrap intervals at the persona-catch study's election scale.

    .venv/bin/python bench/bootstrap.py [--states 48] [--persons 1000] [--styles 4] [--draws 1000] [--mode logprob]

Synthetic answers (no model): `--states` states x `--persons` persons each answer the 2016, 2020 and 2024
election questions in `--styles` styles (option distributions in logprob mode, sampled letters in fast mode). Times
`evaluate`'s `run` with the given draws against `bootstrap: 0` (point figures, baselines and tables only), under
the unweighted and population weightings, and prints a table (wall and CPU seconds: CPU time is what a loaded
machine does not inflate; set OMP_NUM_THREADS=1 for one core).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]


def datasets(states: list[str], persons: int, styles: int, mode: str, seed: int = 0):
    import numpy as np
    from datasets import ClassLabel, Dataset, Features, Value

    from factory.census.persons import CITIZENSHIP
    from factory.questions.sets import features, load_seed_set
    from factory.stages.answers import OUTPUTS

    rng = np.random.default_rng(seed)
    n = len(states) * persons
    geo = np.repeat(np.arange(len(states)), persons)
    ids = [f"{states[g]}-{i:05d}" for g, i in zip(geo, np.tile(np.arange(persons), len(states)))]
    people = Dataset.from_dict(
        {
            "person_id": ids,
            "geography": geo,
            "weight": rng.uniform(500, 1500, n),
            "age": rng.integers(18, 90, n).astype(np.int16),
            "citizenship": rng.choice(3, n, p=[0.85, 0.08, 0.07]),
        },
        features=Features(
            {
                "person_id": Value("string"),
                "geography": ClassLabel(names=states),
                "weight": Value("float64"),
                "age": Value("int16"),
                "citizenship": ClassLabel(names=CITIZENSHIP),
            }
        ),
    )
    questions = Dataset.from_list(load_seed_set("election"), features=features())
    lean = rng.uniform(0.3, 0.7, len(states))  # each state's Democratic lean
    cols: dict[str, list] = {c: [] for c in OUTPUTS["data"].types}
    for q in questions.to_list():
        k = len(q["options"])
        dem = next(i for i, o in enumerate(q["options"]) if any(x in o for x in ("Clinton", "Biden", "Harris")))
        for s in range(styles):
            p = np.clip(lean[geo] + 0.05 * s + rng.normal(0, 0.2, n), 0.01, 0.99)
            if mode == "logprob":
                dist = np.zeros((n, k))
                dist[:, dem], dist[:, 1 - dem] = p, 1 - p
                choice, distribution = [None] * n, dist.tolist()
            else:
                draw = rng.random(n) < p
                choice, distribution = np.where(draw, dem, 1 - dem).tolist(), [None] * n
            cols["person_id"] += ids
            cols["geography"] += [states[g] for g in geo]
            cols["weight"] += [1.0] * n
            cols["style"] += [f"style{s}"] * n
            cols["question_id"] += [q["question_id"]] * n
            cols["mode"] += [mode] * n
            cols["sample"] += [0] * n
            cols["round"] += [0] * n
            cols["option_order"] += [list(range(k))] * n
            cols["choice"] += choice
            cols["distribution"] += distribution
            cols["valid"] += [True] * n
            for c in ("invalid_reason", "reasoning"):
                cols[c] += [None] * n
            cols["text"] += ["A"] * n
            cols["model"] += ["synthetic"] * n
            cols["seed"] += [0] * n
            cols["prompt_tokens"] += [0] * n
            cols["completion_tokens"] += [0] * n
    answers = Dataset.from_dict(cols, features=OUTPUTS["data"].features())
    return answers, people, questions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--states", type=int, default=48)
    parser.add_argument("--persons", type=int, default=1000)
    parser.add_argument("--styles", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--mode", choices=["logprob", "fast"], default="logprob")
    args = parser.parse_args()

    from factory.evaluate.metrics import EV_2010
    from factory.stage import StageContext
    from factory.stages.evaluate import Options, run

    states = [s for s in EV_2010 if s not in ("AK", "HI", "DC")][: args.states]
    t0 = time.perf_counter()
    answers, people, questions = datasets(states, args.persons, args.styles, args.mode)
    made = time.perf_counter() - t0
    inputs = {"answers": answers, "people": people, "questions": questions}
    ctx = StageContext(recipe="bench", stage="evaluate", seed=0)
    timings, cpu = {}, {}
    for draws in (0, args.draws):
        t0, c0 = time.perf_counter(), time.process_time()
        out = run(Options(bootstrap=draws), inputs, ctx)
        timings[draws], cpu[draws] = time.perf_counter() - t0, time.process_time() - c0
    summary = out.extras["election_summary"].to_pandas()
    row = summary[(summary["style"] == "style0") & (summary["weighting"] == "population")].iloc[0]
    print(
        f"{len(states)} states x {args.persons} persons x {args.styles} styles x 3 questions ({answers.num_rows:,} "
        f"{args.mode} answers; synthetic data built in {made:.1f} s), weightings unweighted + population\n"
    )
    print("| run | wall s | CPU s |")
    print("|---|---|---|")
    print(f"| evaluate, `bootstrap: 0` (point figures, baselines, tables) | {timings[0]:.1f} | {cpu[0]:.1f} |")
    print(f"| evaluate, `bootstrap: {args.draws}` | {timings[args.draws]:.1f} | {cpu[args.draws]:.1f} |")
    d_wall, d_cpu = timings[args.draws] - timings[0], cpu[args.draws] - cpu[0]
    print(f"| the intervals alone | {d_wall:.1f} | {d_cpu:.1f} |")
    print(
        f"\nstyle0, {int(row.year)}, population: MAE {row.mae_state_share:.4f} "
        f"[{row.mae_ci_low:.4f}, {row.mae_ci_high:.4f}], Democratic electors {row.sim_electoral_votes_dem} "
        f"[{row.electoral_votes_ci_low:.0f}, {row.electoral_votes_ci_high:.0f}]"
    )


if __name__ == "__main__":
    main()
