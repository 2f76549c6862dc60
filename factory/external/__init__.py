"""Datasets from anywhere: a Hub, published-folder or local dataset read (streamed or memory-mapped), sampled,
and mapped onto a factory role's schema (people, personas, questions, answers)."""
