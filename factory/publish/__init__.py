"""Publishing: stage outputs as versioned Hugging Face repos (the Hub, or a local folder laid out like one).

- `profiles`: where to publish (a `push/` profile: target, namespace or path, visibility, licence).
- `layout`: a repo's file set from stage outputs (parquet shards, plots, adapter files, the card).
- `cards`: dataset and model cards rendered from the Jinja templates in `cards/`.
- `versions`: content hashes and version tags (`v1`, `v2` ...; a tag is never moved).
- `destinations`: `FolderTarget` (a git repository on disk) and `HubTarget` (`huggingface_hub.HfApi`).
- `push`: publish a recipe's built stages (`factory push`, a recipe's `publish:` block).
(`hub://org/name@revision:config` inputs, which read published datasets back, are `factory/hub_inputs.py`.)

Nothing heavy is imported at package import, so `factory validate` stays instant.
"""
