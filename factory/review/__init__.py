"""Human review of preference pairs in Argilla v2: export, import, and the `review` stage that applies the votes.

The loop, for a recipe with `review: {uses: review, inputs: [pairs]}`:

1. `factory review export RECIPE` logs every pair of the built input as an Argilla record (`client.export`): the
   prompt, the target, the two responses as A and B in a seeded per-pair order, persona metadata to filter on,
   the questions (which response fits the target better, a 1-5 rating, a comment) and the judge's pick as a
   suggestion. Records are keyed by `pair_id`, so a second export updates them instead of adding copies.
2. Reviewers answer in the Argilla UI.
3. `factory review import RECIPE` writes every submitted response to the decisions file (`records.write_decisions`,
   JSONL beside the recipe) and builds the `review` stage: its fingerprint hashes that file, so each new import is
   a new dataset version and an unchanged one is a cache hit.

- `records`: pair ids, the A/B order, records as plain dicts, the decisions file. No Argilla import.
- `client`: the Argilla client (imported lazily): connection, dataset settings, upsert, fetching responses; every
  failure becomes one `ReviewError` line. The API key is read from `ARGILLA_API_KEY` per command and never
  written, logged or put in a message.
- `factory.commands.review` (above the runner): what `factory review export|import` do with a recipe.
"""
