"""Recipe wiring (stage contract v2): a recipe's `inputs:` meet each stage's input roles at `load_recipe`, before
anything runs; a mis-wired recipe fails there with one line naming the stage and the role."""

from __future__ import annotations

import pytest

from factory.errors import RecipeError
from factory.recipe import load_recipe

# ---------------------------------------------------------------------------------------------------------------
# the survey stages: answers, personas, evaluate (wired to the stages that really feed them)

SURVEY = """
name: w
seed: 0
backends:
  small: {type: transformers, model: sshleifer/tiny-gpt2}
stages:
  people: {uses: meta_personas, geographies: [WY], n_per_geography: 5}
  paper: {uses: meta_personas, mode: paper, geographies: [WY], n_per_geography: 5}
  election: {uses: questions, sets: [election]}
  opinion: {uses: questions, sets: [opinionqa]}
"""


def survey(write_recipe, stages: str):
    return write_recipe(SURVEY + stages)


def wiring_error(path) -> str:
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_survey_stages_listed_in_any_order_are_matched_to_their_roles(write_recipe):
    recipe = load_recipe(
        survey(
            write_recipe,
            """
  personas: {uses: personas, inputs: [paper], backend: small, styles: [descriptive]}
  votes: {uses: answers, inputs: [election, personas, people], backend: small}
  evaluate: {uses: evaluate, inputs: [election, votes, paper], electorate: adults}
""",
        )
    )
    roles = {name: recipe.stages[name].roles for name in ("personas", "votes", "evaluate")}
    assert roles["personas"] == {"people": "paper"}
    assert roles["votes"] == {"people": "people", "personas": "personas", "questions": "election"}
    assert roles["evaluate"] == {"answers": ["votes"], "people": "paper", "questions": "election"}  # a `many` role


def test_evaluate_fed_personas_instead_of_answers_fails_at_load(write_recipe):
    message = wiring_error(
        survey(
            write_recipe,
            """
  personas: {uses: personas, inputs: [people], backend: small}
  evaluate: {uses: evaluate, inputs: [personas, people, election]}
""",
        )
    )
    assert "stages.evaluate.inputs" in message and "role 'answers'" in message and "question_id" in message


def test_evaluate_with_a_named_role_lacking_its_columns_fails_at_load(write_recipe):
    message = wiring_error(
        survey(
            write_recipe,
            """
  votes: {uses: answers, inputs: [people, election], backend: small}
  evaluate: {uses: evaluate, inputs: {answers: votes, people: paper, questions: people}, electorate: adults}
""",
        )
    )
    assert message.startswith("stages.evaluate.inputs.questions:") and "role 'questions'" in message


def test_personas_fed_a_questions_stage_fails_at_load(write_recipe):
    message = wiring_error(survey(write_recipe, "  personas: {uses: personas, inputs: [election], backend: small}\n"))
    assert message.startswith("stages.personas.inputs.people:") and "role 'people'" in message
    assert "'election'" in message and "person_id" in message


def test_answers_with_two_question_stages_and_no_people_fails_at_load(write_recipe):
    message = wiring_error(
        survey(write_recipe, "  votes: {uses: answers, inputs: [election, opinion], backend: small}\n")
    )
    assert "stages.votes.inputs" in message and "role 'people'" in message and "person_id" in message


def test_raked_weighting_over_people_without_raking_weights_fails_at_load(write_recipe):
    """Roles refined by options (`inputs(options)`): raking needs calibrate's raking_weight in the people input."""
    message = wiring_error(
        survey(
            write_recipe,
            """
  votes: {uses: answers, inputs: [people, election], backend: small, mode: logprob}
  evaluate: {uses: evaluate, inputs: [votes, people, election], weightings: [unweighted, raked]}
""",
        )
    )
    assert message.startswith("stages.evaluate.inputs")
    assert "'raking_weight'" in message


def test_eligible_electorate_over_paper_people_fails_at_load(write_recipe):
    """The default electorate (citizens 18+) needs the people's citizenship, which paper-mode people lack."""
    message = wiring_error(
        survey(
            write_recipe,
            """
  votes: {uses: answers, inputs: [paper, election], backend: small, mode: logprob}
  evaluate: {uses: evaluate, inputs: {answers: votes, people: paper, questions: election}}
""",
        )
    )
    assert message.startswith("stages.evaluate.inputs.people") and "'citizenship'" in message


def test_evaluate_takes_several_answer_inputs(write_recipe):
    recipe = load_recipe(
        survey(
            write_recipe,
            """
  small: {uses: answers, inputs: [people, election], backend: small, mode: logprob}
  big: {uses: answers, inputs: [people, election], backend: small, mode: logprob, styles: [meta]}
  evaluate: {uses: evaluate, inputs: [small, big, people, election]}
""",
        )
    )
    assert recipe.stages["evaluate"].roles == {"answers": ["small", "big"], "people": "people", "questions": "election"}


# ---------------------------------------------------------------------------------------------------------------
# the census stages and questions: calibrate (role people: full-mode meta personas), meta_personas and questions
# (source stages: no input role at all)


def test_calibrate_fed_a_questions_stage_fails_at_load(write_recipe):
    message = wiring_error(survey(write_recipe, "  calibrated: {uses: calibrate, inputs: [election]}\n"))
    assert message.startswith("stages.calibrated.inputs.people:") and "role 'people'" in message
    assert "'election'" in message and "'person_id'" in message


def test_calibrate_with_a_named_role_fed_questions_or_paper_people_fails_at_load(write_recipe):
    message = wiring_error(survey(write_recipe, "  calibrated: {uses: calibrate, inputs: {people: election}}\n"))
    assert message.startswith("stages.calibrated.inputs.people:") and "'election' does not write" in message
    message = wiring_error(survey(write_recipe, "  calibrated: {uses: calibrate, inputs: [paper]}\n"))
    assert message.startswith("stages.calibrated.inputs.people:") and "'paper'" in message
    assert "'geography'" in message  # paper mode writes person_id but not the full-mode columns


def test_calibrate_on_full_people_is_wired_to_its_role(write_recipe):
    recipe = load_recipe(survey(write_recipe, "  calibrated: {uses: calibrate, inputs: [people]}\n"))
    assert recipe.stages["calibrated"].roles == {"people": "people"}


@pytest.mark.parametrize("inputs", ["[election]", "{people: election}"])
def test_meta_personas_given_any_input_fails_at_load(write_recipe, inputs):
    message = wiring_error(
        survey(write_recipe, f"  more: {{uses: meta_personas, geographies: [VT], inputs: {inputs}}}\n")
    )
    assert message.startswith("stages.more.inputs: takes no inputs (a source stage)")


@pytest.mark.parametrize("inputs", ["[people]", "{questions: election}"])
def test_questions_given_any_input_fails_at_load(write_recipe, inputs):
    message = wiring_error(survey(write_recipe, f"  more: {{uses: questions, sets: [election], inputs: {inputs}}}\n"))
    assert message.startswith("stages.more.inputs: takes no inputs (a source stage)")


# ---------------------------------------------------------------------------------------------------------------
# the personality loop: preferences, review, train_dpo, trait_control (wired to the stages that really feed them)

LOOP = """
name: loop
seed: 0
backends:
  small: {type: transformers, model: sshleifer/tiny-gpt2}
stages:
  people: {uses: meta_personas, geographies: [WY], n_per_geography: 4, bigfive: {mode: targets, targets: mbti_roles}}
  election: {uses: questions, sets: [election]}
  opinion: {uses: questions, sets: [opinionqa]}
  personality: {uses: questions, sets: [personality]}
  open_answers: {uses: answers, inputs: [people, personality], backend: small, styles: [meta, base]}
  personas: {uses: personas, inputs: [people], backend: small}
"""


def loop(write_recipe, stages: str):
    return write_recipe(LOOP + stages)


def test_loop_stages_listed_in_any_order_are_matched_to_their_roles(write_recipe):
    recipe = load_recipe(
        loop(
            write_recipe,
            """
  pairs: {uses: preferences, inputs: [personality, open_answers, people], judge: {backend: small}}
  reviewed: {uses: review, inputs: [pairs]}
  adapter: {uses: train_dpo, inputs: [reviewed]}
  control: {uses: trait_control, inputs: [personality, adapter], judge: {backend: small}}
""",
        )
    )
    roles = {name: recipe.stages[name].roles for name in ("pairs", "reviewed", "adapter", "control")}
    assert roles["pairs"] == {"answers": "open_answers", "people": "people", "questions": "personality"}
    assert roles["reviewed"] == {"pairs": "pairs"}
    assert roles["adapter"] == {"pairs": "reviewed"}
    assert roles["control"] == {"adapter": "adapter", "questions": "personality"}


def test_preferences_fed_two_question_stages_and_no_answers_fails_at_load(write_recipe):
    message = wiring_error(
        loop(
            write_recipe, "  pairs: {uses: preferences, inputs: [election, opinion, people], judge: {backend: small}}\n"
        )
    )
    assert (
        message.startswith("stages.pairs.inputs.answers:") and "role 'answers'" in message and "'person_id'" in message
    )


def test_review_fed_answers_instead_of_pairs_fails_at_load(write_recipe):
    message = wiring_error(loop(write_recipe, "  reviewed: {uses: review, inputs: [open_answers]}\n"))
    assert message.startswith("stages.reviewed.inputs") and "role 'pairs'" in message and "'prompt'" in message


def test_train_dpo_fed_questions_fails_at_load(write_recipe):
    message = wiring_error(loop(write_recipe, "  adapter: {uses: train_dpo, inputs: {pairs: election}}\n"))
    assert message.startswith("stages.adapter.inputs.pairs:") and "role 'pairs'" in message
    assert "'election'" in message and "'prompt'" in message


def test_trait_control_fed_personas_instead_of_an_adapter_fails_at_load(write_recipe):
    message = wiring_error(
        loop(
            write_recipe, "  control: {uses: trait_control, inputs: [personas, personality], judge: {backend: small}}\n"
        )
    )
    assert message.startswith("stages.control.inputs") and "role 'adapter'" in message and "'step'" in message
