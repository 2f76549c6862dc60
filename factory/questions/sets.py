"""Question sets: the shipped ones and user files, read into one schema of question rows.

Shipped sets (`SETS`): the persona-catch study's Election, Climate, Customer, Education, Entertainment and
Technology sets, the 1,494 Pew OpinionQA questions (684 with human answer distributions, overall and by
group) and the personality study's open questions on 200 everyday topics (20,000 rows, deduplicated).
User files: the studies' `context.json` shape (`{"topic_k": {"question_id", "topic", "candidates": {"A":
{"stance"}}}}`) or CSV with columns `topic,question` and optional `id`, `options` (`|`-separated).

A row: `question_id` (`<source>/<source_id>`, unique), `source`, `source_id`, `topic`, `text`, `kind`
(`choice` | `open`), `options` (ordered), `ordinal` (ordinal position per option, null where an option has
none, e.g. "Refused" or "Not sure"), `refusal_index` (index of a "Refused" option or null),
`human_distribution` (overall answer shares over `options`, from unweighted counts, "Refused" included),
`human_n` (respondents), `human_groups` (per attribute and group: counts over `options`).

Duplicates: `normalize` is the exact key; `DuplicateIndex` also finds near duplicates (Jaccard similarity of word
1-2-gram shingles), for generated questions that repeat one another with a word changed.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

from factory.errors import DataError
from factory.resources import data_path

SEED_SETS = {
    "election": "Election",
    "climate": "Climate",
    "customer": "Customer",
    "education": "Education",
    "entertainment": "Entertainment",
    "technology": "Technology",
}
SETS: dict[str, str] = {
    **{k: f"persona-catch study {v} questions (two options)" for k, v in SEED_SETS.items()},
    "opinionqa": "1,494 Pew ATP questions of OpinionQA; 684 carry human answer distributions overall and by group",
    "personality": "open questions on 200 everyday topics from the personality study, deduplicated",
}
KINDS = ("choice", "open")
REFUSED = "Refused"


COLUMNS = {  # the questions table as `features()` builds it, in a stage contract's terms
    "question_id": "string",
    "source": "string",
    "source_id": "string",
    "topic": "string",
    "text": "string",
    "kind": "string",
    "options": "list<string>",
    "ordinal": "list<float32>",
    "refusal_index": "int32",
    "human_distribution": "list<float64>",
    "human_n": "int64",
    "human_groups": "any",  # list of {attribute, group, counts: list[float64]} (Columns has no struct type)
}


def features():
    from datasets import Features, List, Value

    return Features(
        {
            "question_id": Value("string"),
            "source": Value("string"),
            "source_id": Value("string"),
            "topic": Value("string"),
            "text": Value("string"),
            "kind": Value("string"),  # vocabulary: KINDS
            "options": List(Value("string")),
            "ordinal": List(Value("float32")),
            "refusal_index": Value("int32"),
            "human_distribution": List(Value("float64")),
            "human_n": Value("int64"),
            "human_groups": List(
                {"attribute": Value("string"), "group": Value("string"), "counts": List(Value("float64"))}
            ),
        }
    )


def normalize(text: str) -> str:
    """Key for duplicate detection: case, whitespace and trailing punctuation do not make a new question."""
    return re.sub(r"\s+", " ", text).strip().casefold().rstrip(" ?.!")


def _row(
    source: str, source_id: str, topic: str, text: str, options: list[str], ordinal: list[float | None] | None = None
) -> dict[str, Any]:
    refusal = options.index(REFUSED) if REFUSED in options else None
    return {
        "question_id": f"{source}/{source_id}",
        "source": source,
        "source_id": str(source_id),
        "topic": topic,
        "text": text.strip(),
        "kind": "choice" if options else "open",
        "options": options,
        "ordinal": ordinal if ordinal is not None else [None] * len(options),
        "refusal_index": refusal,
        "human_distribution": None,
        "human_n": None,
        "human_groups": None,
    }


MAX_OPTIONS = 26  # answers are read as the letters A-Z


def check_options(options: list[str], where: str) -> None:
    """A choice question's options: two to 26, none empty, none repeated (an answer names one by its letter or
    text, so a repeat could never be told apart)."""
    if len(options) == 1:
        raise DataError(f"{where}: a choice question needs at least two options")
    if len(options) > MAX_OPTIONS:
        raise DataError(f"{where}: {len(options)} options; at most {MAX_OPTIONS} (the letters A-Z)")
    seen: set[str] = set()
    for i, option in enumerate(options):
        if not option:
            raise DataError(f"{where}[{i}]: empty option")
        if normalize(option) in seen:
            raise DataError(f"{where}[{i}]: option '{option[:60]}' is given twice")
        seen.add(normalize(option))


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:  # json keeps the last silently: a question or an option would vanish
            raise DataError(f"duplicate key '{key[:60]}'")
        out[key] = value
    return out


def read_context_json(path: Path, source: str, topic: str) -> list[dict]:
    """The studies' `context.json` shape; errors name the file and the offending key."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"), object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    except (ValueError, RecursionError) as exc:  # an integer past Python's digit limit, nesting too deep
        raise DataError(f"{path}: invalid JSON ({type(exc).__name__}: {str(exc)[:100]})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping of topic_k -> {{question_id, topic, candidates}}")
    rows = []
    for key, item in data.items():
        where = f"{path}: {key}"
        if not isinstance(item, dict):
            raise DataError(f"{where}: expected a mapping with question_id, topic, candidates")
        for field in ("question_id", "topic", "candidates"):
            if field not in item:
                raise DataError(f"{where}.{field}: missing")
        cands = item["candidates"]
        if not isinstance(cands, dict) or not cands:
            raise DataError(f"{where}.candidates: expected a non-empty mapping of letter -> {{stance}}")
        options = []
        for letter, cand in cands.items():
            if not isinstance(cand, dict) or not isinstance(cand.get("stance"), str):
                raise DataError(f"{where}.candidates.{letter}.stance: missing or not text")
            options.append(cand["stance"].strip())
        check_options(options, f"{where}.candidates")
        qid = item["question_id"]
        if isinstance(qid, bool) or not isinstance(qid, (str, int)) or not str(qid).strip():
            raise DataError(f"{where}.question_id: expected text or a whole number, got {json.dumps(qid)[:40]}")
        text = item["topic"]
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}.topic: the question text is empty or not text")
        rows.append(_row(source, str(qid).strip(), topic, text, options))
    return rows


def read_csv(path: Path, source: str) -> list[dict]:
    """CSV with `topic,question` (open questions) and optional `id` and `options` (`A|B|C`) columns."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark
            reader = csv.DictReader(f)
            cols = reader.fieldnames or []
            for need in ("topic", "question"):
                if need not in cols:
                    raise DataError(f"{path}: missing column '{need}' (have: {', '.join(cols) or 'none'})")
            rows: list[dict] = []
            used: dict[str, int] = {}
            for line, rec in enumerate(reader, start=2):
                text = (rec.get("question") or "").strip()
                if not text:
                    raise DataError(f"{path}:{line}: empty question")
                options = [o.strip() for o in (rec.get("options") or "").split("|") if o.strip()]
                check_options(options, f"{path}:{line}: options")
                qid = (rec.get("id") or "").strip()
                if not qid:  # content-derived ids survive reordering; repeats of a text get -2, -3...
                    base = _text_id(text)
                    used[base] = used.get(base, 0) + 1
                    qid = base if used[base] == 1 else f"{base}-{used[base]}"
                rows.append(_row(source, qid, (rec.get("topic") or "").strip(), text, options))
            return rows
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None


def _text_id(text: str) -> str:
    return hashlib.sha1(normalize(text).encode()).hexdigest()[:12]


def load_seed_set(name: str) -> list[dict]:
    title = SEED_SETS[name]
    return read_context_json(data_path("questions", "seed_topics", f"{title}.json"), name, title)


def load_personality() -> list[dict]:
    """All 20,000 (topic, question) rows; duplicates are removed by the stage's `dedup` like any others."""
    import pandas as pd

    df = pd.read_parquet(data_path("questions", "personality_questions_by_topic.parquet"))
    topics = set(data_path("questions", "personality_topics_200.txt").read_text().splitlines())
    stray = set(df["topic"]) - topics
    if stray:
        raise DataError(f"personality questions: topics outside topics_200.txt: {sorted(stray)[:3]}")
    # ids are row numbers of the shipped file (fixed), since 7,360 rows repeat another row's text
    return [_row("personality", f"q{i:05d}", t, q, []) for i, (t, q) in enumerate(zip(df["topic"], df["question"]))]


def load_opinionqa() -> list[dict]:
    """OpinionQA: options from the study's JSON (the Pew CSV splits options that contain commas), human data
    from the Pew counts, matched by option text (case-insensitively as a fallback for typos in the source)."""
    import pandas as pd

    rows = {
        r["source_id"]: r
        for r in read_context_json(data_path("questions", "seed_topics", "Opinion_QA.json"), "opinionqa", "")
    }
    meta = pd.read_parquet(data_path("opinionqa", "questions.parquet"))
    for qkey, wave, ordinal_json in zip(meta["qkey"], meta["wave"], meta["option_ordinal_json"]):
        row = rows[qkey]
        ords = json.loads(ordinal_json)
        substantive = [o for o in row["options"] if o != REFUSED]
        # Ordinal positions cover the leading options; trailing ones ("Not sure", "Refused") have none.
        row["ordinal"] = [
            float(ords[i]) if i < len(ords) and o != REFUSED else None for i, o in enumerate(row["options"])
        ]
        if len(ords) > len(substantive):
            raise DataError(f"opinionqa/questions.parquet: {qkey}: more ordinal positions than options")
        row["topic"] = f"Pew ATP {wave}"
    for row in rows.values():
        if not row["topic"]:
            row["topic"] = "Pew ATP " + row["source_id"].rsplit("_", 1)[-1]

    overall = _aligned_counts(
        rows,
        pd.read_parquet(data_path("opinionqa", "overall_distributions.parquet")),
        ["qkey"],
        "overall_distributions.parquet",
    )
    for (qkey,), counts in overall:
        total = sum(counts)
        rows[qkey]["human_n"] = round(total)
        rows[qkey]["human_distribution"] = [c / total for c in counts]

    groups = _aligned_counts(
        rows,
        pd.read_parquet(data_path("opinionqa", "group_counts.parquet")),
        ["qkey", "attribute", "group"],
        "group_counts.parquet",
    )
    for (qkey, attr, group), counts in groups:
        if rows[qkey]["human_groups"] is None:
            rows[qkey]["human_groups"] = []
        rows[qkey]["human_groups"].append({"attribute": attr, "group": group, "counts": counts})
    return list(rows.values())


def _aligned_counts(rows: dict[str, dict], df, keys: list[str], what: str) -> list[tuple[tuple, list[float]]]:
    """Sum `count` per `keys` into a vector aligned with each question's options (vectorised: 180k rows)."""
    index: dict[tuple[str, str], int] = {}
    for qkey, row in rows.items():
        for i, option in enumerate(row["options"]):
            index[(qkey, option)] = i
            index.setdefault((qkey, option.casefold()), i)
    pos = [index.get((q, o), index.get((q, str(o).casefold()), -1)) for q, o in zip(df["qkey"], df["option"])]
    df = df.assign(pos=pos)
    bad = df[(df["pos"] < 0) & (df["count"] > 0)]
    if len(bad):  # zero-count unmatched rows are the source's comma-split option artefacts
        q, o = bad.iloc[0]["qkey"], bad.iloc[0]["option"]
        raise DataError(f"opinionqa/{what}: {q}: option {o!r} is not among the question's options")
    table = df[df["pos"] >= 0].pivot_table(index=keys, columns="pos", values="count", aggfunc="sum", fill_value=0.0)
    out = []
    for key, values in zip(table.index, table.to_numpy()):
        key = key if isinstance(key, tuple) else (key,)
        n = len(rows[key[0]]["options"])
        out.append((key, [float(v) for v in values[:n]]))
    return out


LOADERS: dict[str, Callable[[], list[dict]]] = {
    **{k: (lambda k=k: load_seed_set(k)) for k in SEED_SETS},
    "opinionqa": load_opinionqa,
    "personality": load_personality,
}


def load_set(name: str) -> list[dict]:
    return LOADERS[name]()


def load_file(path: Path, source: str) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return read_context_json(path, source, source)
    if suffix == ".csv":
        return read_csv(path, source)
    raise DataError(f"{path}: unsupported question file (use .json in the context.json shape or .csv)")


# --- near duplicates ------------------------------------------------------------------------------------------


def shingles(text: str) -> frozenset[str]:
    """Word unigrams and bigrams of the normalised text: what near-duplicate detection compares."""
    words = re.findall(r"[\w']+", normalize(text))
    return frozenset(words) | frozenset(f"{a} {b}" for a, b in zip(words, words[1:]))


def jaccard(a: str, b: str) -> float:
    """Jaccard similarity of two texts' shingles (1.0 for two texts without any word)."""
    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y) if x | y else 1.0


class DuplicateIndex:
    """Finds, for a new text, an earlier one it repeats: the same normalised text (exact), or Jaccard similarity of
    word 1-2-gram shingles at or above `threshold` (near). Incremental: an inverted index from shingle to texts, so
    a lookup costs the postings of its shingles, not a pass over every text (20,000 questions: seconds).

    Word shingles rather than character n-grams: one added word ("What does trust mean to you personally?")
    stays above 0.8, while questions that differ in their content word ("...criticizes your work?" vs
    "...praises your work?") fall to about 0.73. Lexical similarity cannot see paraphrases with other words;
    an embedding model would, at the cost of a model download and a threshold to calibrate.
    """

    def __init__(self, threshold: float = 0.8):
        import numpy as np

        if not 0 < threshold <= 1:
            raise ValueError("threshold must be in (0, 1]")
        self.threshold = threshold
        self.ids: list[str] = []
        self._exact: dict[str, int] = {}
        self._postings: dict[str, array] = {}  # shingle -> ids' positions (int64, read by numpy without a copy)
        self._sizes = np.zeros(64, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def match(self, text: str) -> tuple[str, str, float] | None:
        """(kind 'exact' | 'near', id of the earlier text, similarity) or None; of equally similar earlier texts,
        the first added."""
        import numpy as np

        hit = self._exact.get(normalize(text))
        if hit is not None:
            return "exact", self.ids[hit], 1.0
        sh = shingles(text)
        lists = [np.frombuffer(self._postings[s], dtype=np.int64) for s in sh if s in self._postings]
        if not lists:
            return None
        shared = np.bincount(np.concatenate(lists), minlength=len(self.ids))
        sim = shared / (len(sh) + self._sizes[: len(self.ids)] - shared)
        best = int(np.argmax(sim))  # the first of equal maxima: the earliest text
        if sim[best] >= self.threshold:
            return "near", self.ids[best], float(sim[best])
        return None

    def add(self, qid: str, text: str) -> None:
        import numpy as np

        i = len(self.ids)
        self.ids.append(qid)
        self._exact.setdefault(normalize(text), i)
        sh = shingles(text)
        if i == len(self._sizes):
            self._sizes = np.concatenate([self._sizes, np.zeros_like(self._sizes)])
        self._sizes[i] = len(sh)
        for s in sh:
            self._postings.setdefault(s, array("q")).append(i)


def deduplicate(rows: list[dict]) -> tuple[list[dict], int]:
    """Drop repeated questions, keeping every one with human data and otherwise the first of each group."""
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        key = (normalize(row["text"]), tuple(o.casefold() for o in row["options"]))
        groups.setdefault(key, []).append(i)
    keep: set[int] = set()
    for members in groups.values():
        measured = [i for i in members if rows[i]["human_distribution"] is not None]
        keep.update(measured or members[:1])
    return [r for i, r in enumerate(rows) if i in keep], len(rows) - len(keep)
