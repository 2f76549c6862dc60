"""Census sources, joint fitting and sampling of synthetic people (the `meta_personas` stage's engine)."""
