"""The single-choice answer parser: real-world reply formats parse to the right option, ambiguous ones are invalid."""

from __future__ import annotations

import pytest

from factory.answers.parse import LETTERS, ParsedAnswer, letters, parse_choice

TWO = ["Donald Trump", "Hillary Clinton"]
FOUR = ["Very safe", "Somewhat safe", "Not too safe", "Not at all safe"]
FIVE = [*FOUR, "Refused"]
NESTED = ["Safe", "Somewhat safe", "Unsafe"]  # "Safe" is a substring of the other two
TEN = [f"Choice number {i}" for i in range(10)]  # wide enough that "I" would be a valid letter
NONE_OPTION = ["Yes", "No", "None of the above"]

VALID = [
    ("A", TWO, 0),
    ("b", TWO, 1),
    ("B.", TWO, 1),
    ("B)", TWO, 1),
    ("(A)", TWO, 0),
    ("[B]", TWO, 1),
    ("**B**", TWO, 1),
    ("d)", FOUR, 3),
    ("Answer: A", TWO, 0),
    ("Answer: **B**", TWO, 1),
    ("answer: (b)", TWO, 1),
    ("Answer: [C]", FOUR, 2),
    ("Answer: Option A", TWO, 0),
    ("Answer - B", TWO, 1),
    ("Answer:\nB", TWO, 1),
    ("The answer is B.", TWO, 1),
    ("The correct answer is **C**.", FOUR, 2),
    ("My answer: B", TWO, 1),
    ("Final answer: C", FOUR, 2),
    ("**Final Answer:** D", FOUR, 3),
    ("I choose B", TWO, 1),
    ("I would choose option C", FOUR, 2),
    ("I'd go with A.", TWO, 0),
    ("Option B", TWO, 1),
    ("B: Hillary Clinton", TWO, 1),
    ("B. Hillary Clinton", TWO, 1),
    ("B Hillary Clinton", TWO, 1),
    ("Hillary Clinton", TWO, 1),
    ("hillary clinton.", TWO, 1),
    ("  HILLARY   clinton!  ", TWO, 1),
    ("Answer: Hillary Clinton", TWO, 1),
    ("Answer: hillary clinton, given her experience", TWO, 1),
    ("Reasoning: She has more experience in government.\nAnswer: B", TWO, 1),
    ("As a retired teacher in Ohio, I care about schools.\n\nI value stability.\n\nAnswer: A", TWO, 0),
    ("\\boxed{B}", TWO, 1),
    ("The final answer is $\\boxed{D}$", FOUR, 3),
    ('{"answer": "B"}', TWO, 1),
    ('{"reasoning": "Crime is low here.", "answer": "A"}', FOUR, 0),
    ("**Answer:** B", TWO, 1),
    ("Answer: B\n\nExplanation: As a Democrat I trust Clinton. The answer is not A.", TWO, 1),
    ("Answer: B - Hillary Clinton", TWO, 1),
    ("Answer: B, because she has experience.", TWO, 1),
    ("Answer: B because she has experience.", TWO, 1),
    ("I choose: B", TWO, 1),
    ("B\n\nBecause she has experience.", TWO, 1),
    ("\n\n   Answer: A   \n\n", TWO, 0),
    ("Answer: <letter>\nReasoning: I feel fine at night.\nAnswer: A", FOUR, 0),  # restated format, last one wins
    ("E", FIVE, 4),
    ("Refused", FIVE, 4),
    ("Somewhat safe", FIVE, 1),
    ("Not at all safe.", FIVE, 3),
    ("Answer: Not too safe, given the crime rate", FIVE, 2),
    ("Safe", NESTED, 0),
    ("Somewhat safe", NESTED, 1),
    ("Answer: somewhat safe", NESTED, 1),
    ("B. Somewhat safe", NESTED, 1),
    ("None of the above", NONE_OPTION, 2),
    ("J", TEN, 9),
    ("I would vote for Hillary Clinton", TWO, 1),  # one option's full text in a sentence
    ("I'd vote for Hillary Clinton.", TWO, 1),
    ("Answer: I'd vote for Donald Trump.", TWO, 0),
    ("Personally I feel not too safe walking here at night.", FIVE, 2),  # "safe" inside "not too safe" is not a 2nd
    ("Answer: A\nReasoning: she has experience.\nAnswer: A", TWO, 0),  # agreeing markers stay valid
    ('{"answer": "B", "answer": "B"}', TWO, 1),
    ("Answer: B\n\nFinal answer: Hillary Clinton", TWO, 1),
]

INVALID = [
    ("", TWO),
    ("   \n\t ", TWO),
    ("Answer:", TWO),
    ("Answer:   \n  ", TWO),
    ("Neither", TWO),
    ("None of the above", TWO),
    ("Neither of them, honestly.", TWO),
    ("I cannot answer that", TWO),
    ("I cannot answer that.", TEN),
    ("A or B", TWO),
    ("a or b", TWO),
    ("A and C", FOUR),
    ("Answer: A, B", TWO),
    ("Answer: A or E", FOUR),
    ("B, or maybe A", TWO),
    ("E", FOUR),
    ("Answer: E", FOUR),
    ("Bernie Sanders", TWO),
    ("Answer: Bernie Sanders", TWO),
    ("Answer: B - Donald Trump", TWO),
    ("A lot of people think Trump is better.", TWO),
    ("I think so", TEN),
    ("I'm not sure.", TEN),
    ("E.g. most people feel safe here", FIVE),
    ("safe", FIVE),
    ("Answer: Somewhat safe or safe", NESTED),
    ("Answer: safe or unsafe", NESTED),
    ("The answer is unclear to me", TWO),
    ("I would never vote for Hillary Clinton", TWO),  # names one option, negated
    ("I'd vote for Hillary Clinton or Donald Trump", TWO),
    ("Maybe Hillary Clinton.", TWO),
    ("Hillary Clinton is a candidate, but I'd vote for the other one", TWO),
    ("I don't like Hillary Clinton", TWO),
    ("Answer: A\nAnswer: B", TWO),  # markers that disagree: a contradiction, not "the last one wins"
    ("I choose A. Actually, I choose B.", TWO),
    ('{"answer": "A", "answer": "B"}', TWO),  # duplicate JSON keys with different values
    ("Answer: Donald Trump\n\nFinal answer: Hillary Clinton", TWO),
]


@pytest.mark.parametrize(("text", "options", "index"), VALID)
def test_valid_formats(text, options, index):
    parsed = parse_choice(text, options)
    assert parsed.index == index, parsed
    assert parsed.reason is None


@pytest.mark.parametrize(("text", "options"), INVALID)
def test_invalid_formats(text, options):
    parsed = parse_choice(text, options)
    assert parsed.index is None, parsed
    assert parsed.reason


@pytest.mark.parametrize(
    ("text", "options", "reason"),
    [
        ("", TWO, "empty output"),
        ("Answer:", TWO, "nothing after the answer marker"),
        ("A and C", FOUR, "several options named: A, C"),
        ("E", FOUR, "letter E is not among the 4 options"),
        ("Neither", TWO, "no option letter or option text found"),
        ("Answer: B - Donald Trump", TWO, "letter B but the text names option A (Donald Trump)"),
        ("Answer: A\nAnswer: B", TWO, "answers disagree: A then B"),
        ('{"answer": "B", "answer": "A"}', TWO, "answers disagree: B then A"),
        ("I'd vote for Hillary Clinton or Donald Trump", TWO, "several options named: A, B"),
        ("I would never vote for Hillary Clinton", TWO, "names option B but hedges or negates it"),
    ],
)
def test_reasons(text, options, reason):
    assert parse_choice(text, options).reason == reason


def test_table_size():
    assert len(VALID) + len(INVALID) >= 40 and len(INVALID) >= 12


def test_letters():
    assert letters(1) == ["A"]
    assert letters(4) == ["A", "B", "C", "D"]
    assert "".join(letters(26)) == LETTERS
    for n in (0, -1, 27):
        with pytest.raises(ValueError):
            letters(n)


def test_reasoning_extracted():
    parsed = parse_choice("Reasoning: She has more experience in government.\nAnswer: B", TWO)
    assert parsed == ParsedAnswer(1, None, "She has more experience in government.")
    before = parse_choice("As a retired teacher, I care about schools.\n\nAnswer: A", TWO)
    assert before.reasoning == "As a retired teacher, I care about schools."
    assert parse_choice('{"reasoning": "Crime is low here.", "answer": "A"}', FOUR).reasoning == "Crime is low here."


NO_REASONING = ["B", "Answer: B", "**Final Answer:** B", "The answer is B.", "Answer: B\n\nExplanation: experience"]


@pytest.mark.parametrize("text", NO_REASONING)
def test_no_reasoning(text):
    assert parse_choice(text, TWO).reasoning is None


def test_no_options_is_an_error():
    with pytest.raises(ValueError):
        parse_choice("A", [])
