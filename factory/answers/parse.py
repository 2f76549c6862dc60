r"""Parse a model's reply to a single-choice question into the index of the option it names.

Contract: `parse_choice(text, options)` takes the raw model output and the option texts in the order they were shown
(labelled A, B, C... as "A. <text>") and returns `ParsedAnswer(index, reason, reasoning)`. `index` is the 0-based
position among the shown options; when the reply is invalid it is None and `reason` says why in a few words. The
parser never guesses: anything ambiguous is invalid, and a letter beyond `len(options)` never yields an index.

Accepted (case-insensitive):
- a letter standing alone at the start of the reply: `B`, `B.`, `B)`, `(B)`, `[B]`, `**B**`, `Option B`,
  `B: <text>`, `B. <text>`, `B <option text>`, `B because ...`, optionally followed by more lines (`B\n\nBecause ...`);
- the exact option text, ignoring case, whitespace and punctuation (`hillary clinton.`);
- an option's full text inside a sentence on the reply's first line (`I'd vote for Hillary Clinton.`), when no
  other option's text is there and the rest of the line neither hedges nor negates (`maybe`, `not`, `or`, `but`,
  `rather`, `if`...: `I would never vote for Hillary Clinton` stays invalid);
- either of those after an answer marker: `Answer:`, `Answer -`, `**Answer:**`, `Final answer:`, `My answer:`,
  `The answer is`, `I choose`, `I would choose option`, `I'd go with`, `\boxed{B}`, `{"answer": "B"}`. After a
  marker the option text may also open a longer answer (`Answer: Not too safe, given ...`), and a letter may be
  followed by text that agrees with it (`Answer: B - Hillary Clinton`). Only the rest of the marker's line counts,
  so a trailing explanation on later lines is ignored (`Answer: B\n\nExplanation: ...`).
- Several markers: the last one that opens a line gives the answer (models often restate the format,
  `Answer: <letter>`, before answering), else the last one anywhere; every other marker must agree with it. Markers
  that name different options (`Answer: A ... Answer: B`, `{"answer": "A", "answer": "B"}`, `I choose A. No, I
  choose B.`) contradict each other and the reply is invalid; one that names nothing (the restated format) is
  ignored.

Rejected (index None, with a reason): empty output; a marker with nothing after it; two different letters (`A or B`,
`Answer: A, C`) or two option texts (`Safe or unsafe`); answer markers that disagree; a letter outside the shown
options; a letter whose text names another option (`B - Donald Trump` when B is Clinton); text matching no option
(`Neither`, `I cannot answer that`); sentences that merely start with a one-letter word (`A lot of people...`,
`I think so`, `E.g. ...`).

`reasoning` is the text after a `Reasoning:` label up to the answer line, else the text before the answer marker
when it has at least 10 characters, else None.
"""

from __future__ import annotations

import re
from typing import NamedTuple

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

_MARKER = re.compile(
    r"\banswer\b[\"'*_]*\s*(?:(?:is|would\s+be|will\s+be)\b[*_]*\s*[:\-–—]?|[:=]|[-–—](?=\s))"
    r"|\bI(?:\s+would|\s+will|'d|'ll)?\s+(?:choose|pick|select|go\s+with)\b(?:\s*:)?"
    r"|\\boxed\{",
    re.IGNORECASE,
)
# What may precede a marker on its line for it to count as opening the line ("**Final Answer:**", "So the answer is").
_LINE_PREFIX = re.compile(
    r"[\s>#*_\-]*(?:\d+[.)]\s*)?(?:(?:the|my|final|correct|best|your|so|thus|therefore|hence)\b[\s,*_]*)*",
    re.IGNORECASE,
)
_REASONING = re.compile(r"\breasoning\b[\"'*_]*\s*:", re.IGNORECASE)
_LETTER = re.compile(r"[(\[]?([A-Za-z])[)\]]?(?![A-Za-z0-9'’])")
_CONNECTOR = re.compile(
    r"\s*(?:,|/|&|\bor\b|\band\b)\s*(?:,\s*)?(?:(?:or|and|maybe|perhaps|possibly|option)\s+)*", re.IGNORECASE
)
_OPTION_WORD = re.compile(r"(?:option|choice|letter)\b\s*[:#]?\s*", re.IGNORECASE)
_CLEAN = re.compile(r"\\(?:boxed|text|textbf|mathrm)\{|[*`{}\"$]")
_AFTER_LETTER = ".):;,!?]}-–—/=>"  # punctuation that may directly follow a standalone letter
# Words that make a sentence naming one option something other than choosing it (on normalized text: "don't" is
# "don t"): negation, hedging, alternatives, conditions.
_HEDGE = re.compile(
    r"\b(?:not|never|no|nor|neither|either|or|maybe|perhaps|possibly|probably|might|may|could|unsure|undecided"
    r"|cannot|against|except|unless|if|but|rather|than|instead|however|although|though|other|\w+n t)\b"
)


class ParsedAnswer(NamedTuple):
    index: int | None  # 0-based position among the shown options, None when invalid
    reason: str | None  # why the answer is invalid, None when valid
    reasoning: str | None  # the model's reasoning text, when it wrote one


def letters(n: int) -> list[str]:
    """The first `n` option letters (A, B, ...); 1 <= n <= 26."""
    if not 1 <= n <= len(LETTERS):
        raise ValueError(f"between 1 and {len(LETTERS)} options can be lettered, got {n}")
    return list(LETTERS[:n])


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def _prefix(text: str, norms: list[str]) -> list[int]:
    """Options whose text opens `text` (normalized) at a word boundary; only the longest such texts."""
    hits = [i for i, n in enumerate(norms) if n and (text == n or text.startswith(n + " "))]
    longest = max((len(norms[i]) for i in hits), default=0)
    return [i for i in hits if len(norms[i]) == longest]


def _standalone(rest: str, norms: list[str]) -> bool:
    """Whether a letter followed by `rest` stands alone, rather than being a word like "A" in "A lot" or "I"."""
    if not rest:
        return True
    if rest[0] in _AFTER_LETTER:
        return not re.match(r"\.[A-Za-z]", rest)  # "E.g.", "U.S."
    if not rest[0].isspace():
        return False
    tail = rest.strip()
    return not tail or tail[0] in "-–—:(=" or bool(re.match(r"because\b", tail)) or bool(_prefix(_norm(tail), norms))


def _parse_segment(seg: str, options: list[str], norms: list[str], after_marker: bool) -> tuple[int | None, str]:
    seg = _CLEAN.sub("", seg).strip().strip("'’").strip()
    if not seg:
        return None, "nothing after the answer marker" if after_marker else "empty output"
    text = _norm(seg)
    exact = [i for i, n in enumerate(norms) if n and n == text]
    if exact:
        return (exact[0], "") if len(exact) == 1 else (None, "text matches several identical options")
    body = seg[_OPTION_WORD.match(seg).end() :] if _OPTION_WORD.match(seg) else seg
    m = _LETTER.match(body)
    if m:
        letter, rest = m.group(1).upper(), body[m.end() :]
        conn = _CONNECTOR.match(rest)
        second = _LETTER.match(rest, conn.end()) if conn else None
        if second and second.group(1).upper() != letter:
            # "a" and "I" after "and"/"or" are usually words ("A and I agree"), other single letters are options
            if second.group(1) not in "aI" or _standalone(rest[second.end() :], norms):
                return None, f"several options named: {letter}, {second.group(1).upper()}"
        if _standalone(rest, norms):
            index = LETTERS.index(letter)
            if index >= len(options):
                return None, f"letter {letter} is not among the {len(options)} options"
            named = _prefix(_norm(rest), norms)
            if named and index not in named:
                return None, f"letter {letter} but the text names option {LETTERS[named[0]]} ({options[named[0]]})"
            return index, ""
    if after_marker:
        named = _prefix(text, norms)
        if len(named) > 1:
            return None, "text matches several identical options"
        if named:
            rest = re.sub(r"^\s*(?:(?:or|and|maybe|perhaps)\s+)*", "", text[len(norms[named[0]]) :])
            other = [i for i in _prefix(rest, norms) if i != named[0]]
            if other:
                return None, f"several options named: {LETTERS[named[0]]}, {LETTERS[other[0]]}"
            return named[0], ""
    index, reason = _named_in_sentence(text, norms)
    if index is not None or reason:
        return index, reason or ""
    if after_marker:
        return None, "no option letter or option text after the answer marker"
    return None, "no option letter or option text found"


def _named_in_sentence(text: str, norms: list[str]) -> tuple[int | None, str | None]:
    """The one option whose full text `text` (normalized) contains, when nothing else there hedges or negates it;
    (None, reason) when it names several or hedges; (None, None) when it names none."""
    spans = [
        (m.start(), m.end(), i)
        for i, n in enumerate(norms)
        if n
        for m in re.finditer(rf"(?<![0-9a-z]){re.escape(n)}(?![0-9a-z])", text)
    ]
    # "safe" inside "not too safe" is not a second option
    spans = [s for s in spans if not any(o[0] <= s[0] and s[1] <= o[1] and o[1] - o[0] > s[1] - s[0] for o in spans)]
    named = sorted({i for _, _, i in spans})
    if not named:
        return None, None
    if len(named) > 1:
        return None, f"several options named: {', '.join(LETTERS[i] for i in named[:3])}"
    rest = text
    for start, end, _ in sorted(spans, reverse=True):
        rest = rest[:start] + " " + rest[end:]
    if _HEDGE.search(rest):
        return None, f"names option {LETTERS[named[0]]} but hedges or negates it"
    return named[0], None


def _opens_line(text: str, m: re.Match[str]) -> int | None:
    """Start of the marker's line when only markdown or "the/final/so..." precede the marker on it, else None."""
    start = text.rfind("\n", 0, m.start()) + 1
    return start if _LINE_PREFIX.fullmatch(text, start, m.start()) else None


def _trim(text: str) -> str | None:
    return text.strip(" \t\r\n\"',{}*_#>-") or None


def parse_choice(text: str, options: list[str]) -> ParsedAnswer:
    """The option a single-choice reply names, or None with a reason; see the module docstring for the formats."""
    if not options:
        raise ValueError("parse_choice needs at least one option")
    norms = [_norm(o) for o in options]
    text = (text or "").strip()
    if not text:
        return ParsedAnswer(None, "empty output", None)
    markers = list(_MARKER.finditer(text))
    at_line = [m for m in markers if _opens_line(text, m) is not None]
    counted = at_line or markers
    marker = (counted or [None])[-1]
    line_start = None if marker is None else _opens_line(text, marker)
    cut = None if marker is None else (marker.start() if line_start is None else line_start)
    label = _REASONING.search(text)
    if label:
        reasoning = _trim(text[label.end() : cut if cut is not None and cut > label.end() else len(text)])
    else:
        before = _trim(text[:cut]) if cut else None
        reasoning = before if before and len(before) >= 10 else None
    if marker is None:
        exact = [i for i, n in enumerate(norms) if n and n == _norm(text)]
        if len(exact) == 1:
            return ParsedAnswer(exact[0], None, reasoning)
        index, reason = _parse_segment(text.splitlines()[0], options, norms, after_marker=False)
    else:
        index, reason = _after(text, marker, options, norms)
        for earlier in markers if index is not None else ():  # mid-line ones too: "I choose A. No, I choose B."
            other, _ = _after(text, earlier, options, norms)
            if other is not None and other != index:  # not "the last one wins": the reply contradicts itself
                return ParsedAnswer(None, f"answers disagree: {LETTERS[other]} then {LETTERS[index]}", reasoning)
    return ParsedAnswer(index, reason or None, reasoning)


def _after(text: str, marker: re.Match[str], options: list[str], norms: list[str]) -> tuple[int | None, str]:
    """What the rest of a marker's line names."""
    after = re.sub(r"^[\s*_\"']*", "", text[marker.end() :])
    return _parse_segment(after.split("\n", 1)[0], options, norms, after_marker=True)
