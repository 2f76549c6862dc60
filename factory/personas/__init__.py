"""Persona styles (schemas, prompts' variables) and drift measurement for the `personas` stage."""
