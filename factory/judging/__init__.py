"""Big Five judging: judges (`judges`), targets and similarity (`targets`), the preference pair rules (`pairs`),
the trait-control report (`control`) and the trait prompt (`prompts`). Used by the `preferences` and
`trait_control` stages."""
