"""Prompts shared by the stages that judge Big Five traits: the trait prompt (a system message describing the
target's trait bands, then the question) that the `preferences` stage puts in its pairs and the `trait_control`
stage asks the base model and the adapter."""

from __future__ import annotations


def trait_prompt(traits: list, question: str) -> list[dict[str, str]]:
    from factory.prompts import builtin, render

    system = render(builtin("preferences/trait_system.jinja"), traits=traits)
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]
