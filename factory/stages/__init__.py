"""Built-in stages; each module opens with its contract (inputs, output columns, an example)."""
