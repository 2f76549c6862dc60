"""Answer simulation: prompts, parsing and option handling for the answers stage."""
