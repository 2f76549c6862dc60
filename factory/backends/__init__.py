"""LLM backends: typed endpoint configs now; the generation layer builds on them."""
