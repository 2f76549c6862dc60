"""Big Five judging: judges (`judges`), targets and similarity (`targets`), the preference pair rules (`pairs`) and
the trait-control report (`control`). Used by the `preferences` and `trait_control` stages."""
