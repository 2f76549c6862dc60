"""Try many bad inputs against `factory validate` / `build` / `census fetch` and the model-output and answer
parsers, each in a fresh process with a time limit, and print what happened to each and a count table:

    tried / clean (one-line error, or the right result) / traceback / hang / silent wrong / data loss / leak

    python bench/adversarial_inputs.py                 # this checkout
    python bench/adversarial_inputs.py --root ../old   # another checkout of the repo (say, before a fix)
    python bench/adversarial_inputs.py -k tidy         # only cases whose name contains 'tidy'

"data loss": a crash that throws away rows the batch had already computed; "leak": the secret in the output.
Builds run the real stages (meta_personas on WY), so the whole run takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

SECRET = "SECRETKEY-0123456789abcdef"
Q = "stages: {q: {uses: questions, sets: [election]}}\n"
PEOPLE = "name: t\nstages:\n  people: {uses: meta_personas, geographies: %s, n_per_geography: 3}\n"
TIDY = (
    "name: t\nstages:\n  people: {uses: meta_personas, source: tidy, marginals: m.csv, base_geography: VT, "
    "n_per_geography: 5}\n"
)
AGE = "Town,age,18-24,Male,100\nTown,age,18-24,Female,110\nTown,age,25+,Male,400\nTown,age,25+,Female,420\n"


@dataclass
class Case:
    name: str
    kind: str  # validate | build | fetch | push | python
    payload: str  # a recipe's text, or python code printing CLEAN or WRONG: ...
    expect: str = "error"  # error | ok
    files: dict | None = None  # more files beside the recipe
    loses_rows: bool = False  # a crash here throws away finished rows
    env: dict | None = None
    args: tuple = ()


SLOW_STAGE = textwrap.dedent("""
    import time
    from types import SimpleNamespace
    from factory.options import StageOptions, operational
    try:  # stage contract v2
        from factory.stage import Columns
        WIRING = {"INPUTS": {}, "OUTPUTS": {"data": Columns({"row": "int64"})}}
    except ImportError:  # an older checkout (--root)
        WIRING = {"INPUTS": (0, 0)}

    class Opts(StageOptions):
        crash_at: int = operational(-1)

    def run(options, inputs, ctx):
        if ctx.batch_index == options.crash_at:
            raise RuntimeError("boom")
        time.sleep(0.3)
        return [{"row": i} for i in ctx.batch]

    stage = SimpleNamespace(__doc__="slow rows", VERSION=1, Options=Opts, run=run,
                            plan=lambda o, i, c: [[j, j + 1, j + 2] for j in range(0, 12, 3)], **WIRING)
""")
STATE_HEAD = textwrap.dedent("""
    import shutil, subprocess, sys, time
    from pathlib import Path
    from datasets import load_from_disk
    from factory.errors import FactoryError
    from factory.recipe import load_recipe
    from factory.runner import Runner
    Path("r.yaml").write_text("name: s\\nstages:\\n  a: {uses: 'slowstage:stage'}\\n")
    def runner(overrides=()):
        return Runner(load_recipe("r.yaml", list(overrides)), runs_dir="runs", progress=False)
    def rows():
        return load_from_disk(str(runner().store("a").data_dir))["row"]
""")


def bomb() -> str:
    levels = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        levels.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "name: bomb\nvars:\n" + "".join(f"  {x}\n" for x in levels) + Q


def py(code: str) -> str:
    return textwrap.dedent(code)


CASES = [
    # --- recipes ---
    Case("recipe: alias bomb", "validate", bomb()),
    Case("recipe: alias inside itself (map)", "validate", "name: t\nvars: &a {x: *a}\n" + Q),
    Case("recipe: alias inside itself (list)", "validate", "name: t\nvars: &a [1, *a]\n" + Q),
    Case("recipe: 5000-deep nesting", "validate", "name: t\nvars: {x: " + "[" * 5000 + "]" * 5000 + "}\n" + Q),
    Case("recipe: duplicate top-level key", "validate", "name: t\nseed: 1\nseed: 2\n" + Q),
    Case(
        "recipe: duplicate stage name", "validate", "name: t\nstages:\n  q: {uses: questions}\n  q: {uses: questions}\n"
    ),
    Case("recipe: 5000-digit seed", "validate", "name: t\nseed: " + "9" * 5000 + "\n" + Q),
    Case("recipe: 5000-digit override", "validate", "name: t\n" + Q, args=("seed=" + "9" * 5000,)),
    Case("recipe: seed: true", "validate", "name: t\nseed: true\n" + Q),
    Case(
        "recipe: sample: true", "validate", "name: t\nstages: {q: {uses: questions, sets: [election], sample: true}}\n"
    ),
    Case(
        "recipe: stage name with trailing newline",
        "validate",
        'name: t\nstages: {"q\\n": {uses: questions, sets: [election]}}\n',
    ),
    Case("recipe: recipe name with trailing newline", "validate", 'name: "t\\n"\n' + Q),
    Case("recipe: 300-character stage name", "validate", "name: t\nstages: {" + "a" * 300 + ": {uses: questions}}\n"),
    Case("recipe: hook ':x'", "validate", 'name: t\nstages: {q: {uses: ":x"}}\n'),
    Case("recipe: hook 'a b:c'", "validate", 'name: t\nstages: {q: {uses: "a b:c"}}\n'),
    Case(
        "recipe: hook module calls sys.exit(0)",
        "validate",
        "name: t\nstages: {q: {uses: 'exiter_hook:stage'}}\n",
        files={"exiter_hook.py": "import sys\nsys.exit(0)\n"},
    ),
    Case(
        "recipe: hook module with a syntax error",
        "validate",
        "name: t\nstages: {q: {uses: 'broken_hook:stage'}}\n",
        files={"broken_hook.py": "def f(:\n"},
    ),
    Case(
        "recipe: hook module raises on import",
        "validate",
        "name: t\nstages: {q: {uses: 'raising_hook:stage'}}\n",
        files={"raising_hook.py": "raise RuntimeError('boom')\n"},
    ),
    Case(
        "recipe: template named like a built-in style",
        "validate",
        "name: t\nbackends: {s: {type: transformers}}\nstages:\n  people: {uses: meta_personas, geographies: [WY]}\n"
        "  p: {uses: personas, inputs: [people], backend: s, styles: [descriptive], "
        "templates: {descriptive: {template: mine.jinja}}}\n",
        files={"mine.jinja": "about {{ facts.age }}"},
    ),
    Case("recipe: geographies [WY, WY]", "validate", PEOPLE % "[WY, WY]"),
    Case("recipe: geographies []", "validate", PEOPLE % "[]"),
    Case("build: geographies [WY, WY]", "build", PEOPLE % "[WY, WY]"),
    Case("build: geographies []", "build", PEOPLE % "[]"),
    # --- prompt templates (rendered as the personas stage renders them) ---
    *[
        Case(
            f"template: {name}",
            "python",
            py(f"""
            from pathlib import Path
            from factory.errors import DataError
            from factory.prompts import render
            facts = {{"age": 42, "state": "WY"}}
            Path("t.jinja").write_text({template!r})
            try:
                render(Path("t.jinja"), facts=facts)
                print("WRONG: rendered" if facts == {{"age": 42, "state": "WY"}} else f"WRONG: facts now {{facts}}")
            except DataError:
                print("CLEAN" if facts == {{"age": 42, "state": "WY"}} else "WRONG: facts changed")
            """),
        )
        for name, template in [
            ("nested range loops", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"),
            (
                "six nested loops over a list",
                "{% set l = [0,1,2,3,4,5,6,7,8,9] %}" + "{% for a in l %}" * 6 + "x" + "{% endfor %}" * 6,
            ),
            ("'x' * 10**9", "{{ 'x' * 1000000000 }}"),
            ("2 ** 99999999", "{{ 2 ** 99999999 }}"),
            ("output of 500,000 characters", "{% for i in range(50000) %}{{ 'abcdefghij' }}{% endfor %}"),
            ("facts.update()", "{% set _ = facts.update({'age': 5}) %}{{ facts.age }}"),
            ("facts.pop()", "{{ facts.pop('age') }}"),
        ]
    ],
    # --- tidy census files ---
    Case("tidy: header only", "build", TIDY, files={"m.csv": "geography,dimension,category,sex,count\n"}),
    Case("tidy: empty file", "build", TIDY, files={"m.csv": ""}),
    Case(
        "tidy: all-zero geography",
        "build",
        TIDY,
        files={"m.csv": "geography,dimension,category,count\nTown,age,18-24,0\nTown,age,25+,0\n"},
    ),
    Case(
        "tidy: under-18-only geography",
        "build",
        TIDY,
        files={"m.csv": "geography,dimension,category,count\nKids,age,0-4,100\nKids,age,5-9,100\n"},
    ),
    Case(
        "tidy: shares only (documented format)",
        "build",
        TIDY,
        files={"m.csv": "geography,dimension,category,share\nTown,age,18-24,0.2\nTown,age,25+,0.8\n"},
    ),
    Case(
        "tidy: shares beside an age table of counts",
        "build",
        TIDY,
        expect="ok",
        files={
            "m.csv": "geography,dimension,category,sex,count,share\n"
            + AGE.replace("\n", ",\n")
            + "Town,sex,Male,,,0.49\nTown,sex,Female,,,0.51\n"
        },
    ),
    Case(
        "tidy: share sum off in the 2nd condition",
        "python",
        py("""
            from pathlib import Path
            from factory.census.tidy import TidySource
            from factory.errors import DataError
            Path("m.csv").write_text("geography,dimension,category,sex,count,share\\nTown,age,18-24,,100,\\n"
                "Town,marital_status,Never married,Male,,1.0\\nTown,marital_status,Never married,Female,,0.7\\n"
                "Town,marital_status,Widowed,Female,,0.1\\n")
            try:
                TidySource(Path("m.csv"), "VT").geo_spec("Town", fit_base=False)
                print("WRONG: accepted")
            except DataError as e:
                print("CLEAN" if "0.800" in str(e) else f"WRONG: {e}")
            """),
    ),
    Case(
        "tidy: two count tables disagree",
        "build",
        TIDY,
        files={"m.csv": "geography,dimension,category,sex,count\n" + AGE + "Town,age,18-24,,300\nTown,age,25+,,700\n"},
    ),
    Case(
        "tidy: UTF-8 BOM",
        "build",
        TIDY,
        expect="ok",
        files={"m.csv": "\ufeffgeography,dimension,category,sex,count\n" + AGE},
    ),
    # --- question files ---
    *[
        Case(
            f"questions: {name}",
            "build",
            "name: q\nstages:\n  q: {uses: questions, files: [q.json]}\n",
            expect=expect,
            files={"q.json": text},
        )
        for name, text, expect in [
            (
                "JSON with a BOM",
                "\ufeff"
                + json.dumps(
                    {
                        "t": {
                            "question_id": "1",
                            "topic": "Which?",
                            "candidates": {"A": {"stance": "Yes"}, "B": {"stance": "No"}},
                        }
                    }
                ),
                "ok",
            ),
            (
                "a single option",
                json.dumps({"t": {"question_id": "1", "topic": "Which?", "candidates": {"A": {"stance": "Yes"}}}}),
                "error",
            ),
            (
                "an empty option",
                json.dumps(
                    {
                        "t": {
                            "question_id": "1",
                            "topic": "Which?",
                            "candidates": {"A": {"stance": "Yes"}, "B": {"stance": ""}},
                        }
                    }
                ),
                "error",
            ),
            (
                "a repeated option",
                json.dumps(
                    {
                        "t": {
                            "question_id": "1",
                            "topic": "Which?",
                            "candidates": {"A": {"stance": "Yes"}, "B": {"stance": "Yes"}},
                        }
                    }
                ),
                "error",
            ),
            (
                "empty question text",
                json.dumps(
                    {
                        "t": {
                            "question_id": "1",
                            "topic": "",
                            "candidates": {"A": {"stance": "Yes"}, "B": {"stance": "No"}},
                        }
                    }
                ),
                "error",
            ),
            (
                "a null id",
                json.dumps(
                    {
                        "t": {
                            "question_id": None,
                            "topic": "Which?",
                            "candidates": {"A": {"stance": "Yes"}, "B": {"stance": "No"}},
                        }
                    }
                ),
                "error",
            ),
            (
                "27 options",
                json.dumps(
                    {
                        "t": {
                            "question_id": "1",
                            "topic": "Which?",
                            "candidates": {f"O{i}": {"stance": f"o{i}"} for i in range(27)},
                        }
                    }
                ),
                "error",
            ),
            (
                "duplicate JSON keys",
                '{"t": {"question_id": "1", "topic": "A?", "candidates": {"A": {"stance": "y"}, '
                '"B": {"stance": "n"}}}, "t": {"question_id": "2", "topic": "B?", "candidates": {"A": {"stance": "y"},'
                ' "B": {"stance": "n"}}}}',
                "error",
            ),
        ]
    ],
    Case(
        "questions: CSV with a BOM",
        "build",
        "name: q\nstages:\n  q: {uses: questions, files: [q.csv]}\n",
        expect="ok",
        files={"q.csv": "\ufefftopic,question,options\nx,Which?,Yes|No\n"},
    ),
    # --- secrets and permissions ---
    Case("fetch: base URL without a scheme", "fetch", "", args=("--base-url", "api.census.gov/data")),
    Case("fetch: base URL 'http://[::1'", "fetch", "", args=("--base-url", "http://[::1")),
    Case(
        "argilla: key straddling the 300-character cut",
        "python",
        py(f"""
            from argilla._exceptions import ArgillaError
            from factory.review.client import ReviewError, errors
            try:
                with errors("http://localhost:6900", "{SECRET}", "log in"):
                    raise ArgillaError("x" * 235 + " X-Argilla-Api-Key: {SECRET} more")
            except ReviewError as exc:
                print(exc)
            """),
    ),
    Case(
        "build: runs folder that cannot be written",
        "build",
        "name: t\n" + Q,
        args=("--runs-dir", "blocked/runs"),
        files={"blocked": "a file"},
    ),
    Case("push: publish folder that cannot be written", "push", "name: t\n" + Q + "publish: {profile: local}\n"),
    # --- model output ---
    *[
        Case(
            f"model output: {name}",
            "python",
            py(f"""
            from factory.llm.structured import Invalid, json_parser
            try:
                value = json_parser({{"type": "object"}})({text!r})
                print(f"WRONG: accepted {{str(value)[:40]!r}}")
            except Invalid:
                print("CLEAN")
            """),
        )
        for name, text in [
            ("lone surrogate escape", '{"name": "\\ud83d"}'),
            ("NaN", '{"score": NaN}'),
            ("Infinity", '{"score": Infinity}'),
            ("100,000-deep JSON", "[" * 100000 + "]" * 100000),
            ("5000-digit number", '{"n": ' + "9" * 5000 + "}"),
        ]
    ],
    Case(
        "model output: schema check that raises",
        "python",
        py("""
            from factory.llm.structured import Invalid, json_parser
            try:
                json_parser({"properties": {"a": {"type": "string", "pattern": "("}}})('{"a": "x"}')
                print("WRONG: accepted")
            except Invalid:
                print("CLEAN")
            """),
    ),
    Case(
        "model output: lone surrogate from an API, written as the batch's rows",
        "python",
        py("""
            import pyarrow as pa
            from factory.llm.backend import CachedBackend
            from factory.llm.cache import RequestCache
            from factory.llm.types import in_rounds
            from factory.llm.structured import generate_validated, json_parser
            from factory.llm.types import GenerationRequest, GenerationResult, Sampling
            class API:
                model_id, revision = "api", None
                def generate(self, requests, follow=None):
                    answers = iter(['{"a": "ok"}', '{"a": "\\ud83d"}'])
                    answer = lambda rs: [GenerationResult(next(answers), "stop", 1, 1) for _ in rs]
                    return in_rounds(answer, requests, follow)
            client = CachedBackend(API(), RequestCache("requests.sqlite"))
            reqs = [GenerationRequest.chat([{"role": "user", "content": p}], Sampling(seed=1)) for p in "xy"]
            out = generate_validated(client, reqs, json_parser({"type": "object"}), max_retries=0)
            pa.array([json.dumps(v.value, ensure_ascii=False) if v.ok else v.result.text for v in out])
            print("CLEAN")
            """).replace("import pyarrow", "import json\nimport pyarrow"),
        loses_rows=True,
    ),
    # --- state: concurrent builds, damaged checkpoints and outputs ---
    *[
        Case(
            f"state: {name}",
            "python",
            STATE_HEAD + py(body),
            files={"slowstage.py": SLOW_STAGE},
            loses_rows=name.startswith("forced"),  # there a crash deletes the running build's checkpoints
        )
        for name, body in [
            (
                "forced build while another is running",
                """
                first = subprocess.Popen([sys.executable, "-m", "factory", "build", "r.yaml", "--no-progress"])
                while not runner().store("a").done_batches():
                    time.sleep(0.05)
                try:
                    runner().build(force=["a"])
                    print("WRONG: a second build ran beside the first")
                except FactoryError:
                    pass
                first.wait()
                ok = first.returncode == 0 and rows() == list(range(12))
                print("CLEAN" if ok else "WRONG: data loss: the first build lost its checkpoints")
                """,
            ),
            (
                "truncated and unreadable batch checkpoints",
                """
                try:
                    runner(["stages.a.crash_at=2"]).build()
                except FactoryError:
                    pass
                store = runner().store("a")
                rows_file = store.batch_dir(0) / "rows.arrow"
                rows_file.write_bytes(rows_file.read_bytes()[:30])
                (store.batch_dir(1) / "meta.json").write_text("{")
                (store.partial_dir / "plan.json").write_text("")
                runner().build()
                print("CLEAN" if rows() == list(range(12)) else f"WRONG: {rows()}")
                """,
            ),
            *[
                (
                    what,
                    f"""
                    runner().build()
                    store = runner().store("a")
                    {damage}
                    state = {{s.stage: s.state for s in runner().plan()}}["a"]
                    runner().build()
                    ok = state == "damaged" and rows() == list(range(12))
                    print("CLEAN" if ok else f"WRONG: reported {{state}}, rows {{rows()}}")
                    """,
                )
                for what, damage in [
                    ("garbage completion marker", 'store.marker_path.write_text("{x")'),
                    ("garbage manifest", 'store.manifest_path.write_text("[1]")'),
                    ("data/ deleted", "shutil.rmtree(store.data_dir)"),
                    ("data file truncated", 'next(store.data_dir.glob("*.arrow")).write_bytes(b"x")'),
                    (
                        "data file edited in place",
                        'f = next(store.data_dir.glob("*.arrow")); b = bytearray(f.read_bytes()); '
                        "b[-200] ^= 255; f.write_bytes(bytes(b))",
                    ),
                ]
            ],
        ]
    ],
    # --- the answer parser ---
    *[
        Case(
            f"answer: {text!r}",
            "python",
            py(f"""
            from factory.answers.parse import parse_choice
            got = parse_choice({text!r}, ["Donald Trump", "Hillary Clinton"]).index
            print("CLEAN" if got == {want!r} else f"WRONG: {{got}}")
            """),
            expect="ok" if want is not None else "error",
        )
        for text, want in [
            ("I'd vote for Hillary Clinton.", 1),
            ("I would never vote for Hillary Clinton", None),
            ("I'd vote for Hillary Clinton or Donald Trump", None),
            ("Answer: A\nAnswer: B", None),
            ('{"answer": "A", "answer": "B"}', None),
            ("Answer: B\nFinal answer: B", 1),
        ]
    ],
]


def run_case(case: Case, root: Path, timeout: float) -> tuple[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, text in (case.files or {}).items():
            (work / name).write_text(text, encoding="utf-8")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(root), str(work)]),
            "CENSUS_API_KEY": SECRET,
            **(case.env or {}),
        }
        cmd = [sys.executable, "-m", "factory"]
        if case.kind == "python":
            (work / "case.py").write_text(case.payload, encoding="utf-8")
            cmd = [sys.executable, "case.py"]
        elif case.kind == "fetch":
            cmd += ["census", "fetch", "--year", "2019", "--table", "S0101", "--out", "out", *case.args]
        else:
            (work / "r.yaml").write_text(case.payload, encoding="utf-8")
            if case.kind == "push":  # build, then put a file where the published repos go
                subprocess.run(
                    [*cmd, "build", "r.yaml", "--only", "q", "--no-progress"],
                    cwd=work,
                    env=env,
                    capture_output=True,
                    timeout=timeout,
                )
                (work / "runs" / "t" / "hub").write_text("a file")
                cmd += ["push", "r.yaml"]
            elif case.kind == "build":
                cmd += ["build", "r.yaml", "--no-progress", *(case.args or ("--runs-dir", "runs"))]
            else:
                cmd += ["validate", "r.yaml", *case.args]
        started = time.monotonic()
        try:
            p = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "hang", f"no answer in {timeout:.0f}s"
        seconds = time.monotonic() - started
    out, err = p.stdout.strip(), p.stderr.strip()
    last = (err.splitlines() or [""])[-1][:160]
    if SECRET[:8] in out + err:  # a key cut short leaks too
        return "leak", last or out[:160]
    if "Traceback" in err:
        return ("data loss" if case.loses_rows else "traceback"), last
    if case.kind == "python":
        if out.endswith("CLEAN") or (case.name.startswith("argilla") and SECRET[:8] not in out):
            return "clean", f"{seconds:.1f}s"
        return "silent wrong", out[-160:]
    if case.expect == "ok":
        return ("clean", f"ok in {seconds:.1f}s") if p.returncode == 0 else ("silent wrong", last)
    if p.returncode == 0:
        return "silent wrong", f"exit 0: {(out.splitlines() or [''])[-1][:120]}"
    if len(err.splitlines()) == 1 and err.startswith("error:"):
        return "clean", f"exit {p.returncode}: {err[:150]}"
    return "traceback", f"exit {p.returncode}, {len(err.splitlines())} lines: {last}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1], help="checkout to test")
    ap.add_argument("-k", default="", help="only cases whose name contains this")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds before a case counts as a hang")
    args = ap.parse_args()
    columns = ["clean", "traceback", "hang", "silent wrong", "data loss", "leak"]
    counts: Counter[str] = Counter()
    for case in CASES:
        if args.k and args.k not in case.name:
            continue
        outcome, detail = run_case(case, args.root.resolve(), args.timeout)
        counts[outcome] += 1
        print(f"{outcome:<13} {case.name[:60]:<60} {detail}", flush=True)
    print()
    print(" | ".join(["tried", *columns]))
    print(" | ".join(str(n) for n in [sum(counts.values()), *(counts[c] for c in columns)]))


if __name__ == "__main__":
    main()
