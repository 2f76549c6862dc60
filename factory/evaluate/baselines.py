"""Baselines: what a figure would be without any simulated person, scored in the same tables as the styles.

Elections (each a two-party Democratic share per state, scored like a style):
- `baseline:uniform`: 0.5 in every state (a coin flip; it wins no electors).
- `baseline:national`: the real national two-party share of that election (every state in the results file,
  DC included) applied to every state: what someone who knows only the national vote would guess.
- `baseline:previous_cycle`: each state's real share four years before (2016 -> 2020, 2020 -> 2024); none for
  2016, as no 2012 results are shipped.

OpinionQA (each a distribution over a question's options, scored with the same alignment and tv):
- `baseline:uniform`: the uniform distribution over the options (refusals and options without an ordinal
  position are dropped from it as from any distribution).
- `baseline:overall_human`: for a Pew group, the overall human distribution used as the group's prediction (what
  knowing the population, not the group, gives); not defined for the overall rows.
- `baseline:human_groups`: the human reference spread (Santurkar et al. 2023 compare groups with one another the
  same way): for the overall row, the mean alignment of each real group's distribution with the overall one; for
  a group, the mean alignment with it of the other real groups of the same attribute. A simulation below it
  disagrees with the group more than real groups disagree with one another.
Only the groups a persona maps to (`metrics.PEW_GROUPS`) enter the spread, the same groups the styles get rows for.
"""

from __future__ import annotations

import numpy as np

from factory.evaluate import metrics as M

UNIFORM, NATIONAL, PREVIOUS, OVERALL_HUMAN, HUMAN_GROUPS = (
    "baseline:uniform",
    "baseline:national",
    "baseline:previous_cycle",
    "baseline:overall_human",
    "baseline:human_groups",
)
ELECTION = (UNIFORM, NATIONAL, PREVIOUS)
OPINIONQA = (UNIFORM, OVERALL_HUMAN, HUMAN_GROUPS)
ALL = (UNIFORM, NATIONAL, PREVIOUS, OVERALL_HUMAN, HUMAN_GROUPS)


def is_baseline(style: str) -> bool:
    return style.startswith("baseline:")


def national_share(results, year: int) -> float:
    """The real national two-party Democratic share of one election (all states and DC in the results file)."""
    rows = results[results["year"] == year]
    dem, rep = float(rows["dem_votes"].sum()), float(rows["rep_votes"].sum())
    return dem / (dem + rep)


def election_shares(results, year: int, states: list[str]) -> dict[str, dict[str, float]]:
    """baseline -> state -> predicted two-party Democratic share, for the states given (previous_cycle only
    where the state has a result four years before)."""
    previous = {
        r["state_po"]: float(r["dem_two_party_share"]) for r in results[results["year"] == year - 4].to_dict("records")
    }
    national = national_share(results, year)
    out = {UNIFORM: dict.fromkeys(states, 0.5), NATIONAL: dict.fromkeys(states, national)}
    if previous:
        out[PREVIOUS] = {s: previous[s] for s in states if s in previous}
    return out


def opinionqa_rows(q: dict, groups: dict[str, dict[str, list[float]]]) -> list[dict]:
    """Baseline rows of one question: (style, attribute, group, alignment, tv); `groups` holds the human counts
    of the groups scored (attribute -> group -> counts over the options)."""
    ordinal, refusal, overall = q["ordinal"], q["refusal_index"], q["human_distribution"]
    k = len(q["options"])
    uniform = np.full(k, 1.0 / k)
    rows = []

    def row(style, attribute, group, alignment, tv):
        rows.append({"style": style, "attribute": attribute, "group": group, "alignment": alignment, "tv": tv})

    row(UNIFORM, None, None, *M.compare(uniform, overall, ordinal, refusal))
    spread = [M.compare(counts, overall, ordinal, refusal) for by in groups.values() for counts in by.values()]
    row(HUMAN_GROUPS, None, None, *_mean_pairs(spread))
    for attribute, by in groups.items():
        for group, counts in sorted(by.items()):
            row(UNIFORM, attribute, group, *M.compare(uniform, counts, ordinal, refusal))
            row(OVERALL_HUMAN, attribute, group, *M.compare(overall, counts, ordinal, refusal))
            others = [M.compare(c, counts, ordinal, refusal) for g, c in by.items() if g != group]
            row(HUMAN_GROUPS, attribute, group, *_mean_pairs(others))
    return rows


def _mean_pairs(pairs: list[tuple[float | None, float | None]]) -> tuple[float | None, float | None]:
    out = []
    for i in (0, 1):
        values = [p[i] for p in pairs if p[i] is not None]
        out.append(float(np.mean(values)) if values else None)
    return out[0], out[1]
