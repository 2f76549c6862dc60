"""The Argilla v2 side of the review loop: connect, create the dataset, upsert records, fetch submitted responses.

Only this module imports `argilla` (inside functions: `factory validate` never loads it). The server's address and
key come from `ARGILLA_API_URL` and `ARGILLA_API_KEY` when a command runs; the key lives in the client's request
header and in no file, log line, manifest or message (`redact` scrubs it from every error text).

Every failure reaches the user as one `ReviewError` line: the server cannot be reached, the key is rejected, the
user may not do this, the workspace or dataset does not exist, or an existing dataset has other questions.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from factory.errors import FactoryError
from factory.review import records as R

log = logging.getLogger(__name__)

ENV_URL, ENV_KEY = "ARGILLA_API_URL", "ARGILLA_API_KEY"
UPSERT_BATCH = 256


class ReviewError(FactoryError):
    """Argilla could not be reached or refused a request; nothing local changed."""

    exit_code = 1


@dataclass
class Connection:
    client: Any  # argilla.Argilla
    url: str
    _key: str  # in memory only, to scrub it from messages

    def redact(self, text: str) -> str:
        return redact(text, self._key)


@dataclass
class Exported:
    dataset: str
    workspace: str
    dataset_id: str
    url: str
    records: int
    created: bool


def redact(text: str, key: str | None) -> str:
    """`text` without the key, as written or URL-encoded (in a query string a client echoes)."""
    if not key:
        return text
    from urllib.parse import quote, quote_plus

    for form in {key, quote(key, safe=""), quote_plus(key)}:
        text = text.replace(form, "***")
    return text


def credentials() -> tuple[str, str]:
    url, key = os.environ.get(ENV_URL, "").strip(), os.environ.get(ENV_KEY, "").strip()
    missing = [name for name, value in ((ENV_URL, url), (ENV_KEY, key)) if not value]
    if missing:
        raise ReviewError(
            f"set {' and '.join(missing)} (the Argilla server, e.g. http://localhost:6900, and your API key from "
            "its settings page); the key is read from the environment only and never written"
        )
    return url.rstrip("/"), key


def connect(timeout: float = 60, retries: int = 3) -> Connection:
    """A client logged in to the server named by the environment (checked with `GET /api/v1/me`)."""
    url, key = credentials()
    try:
        import argilla as rg
    except ImportError:
        raise ReviewError(
            "the review commands need the Argilla client: pip install 'persona-factory[review]'"
        ) from None
    with errors(url, key, "log in"):
        client = rg.Argilla(api_url=url, api_key=key, timeout=timeout, retries=retries)
    return Connection(client, url, key)


@contextmanager
def errors(url: str, key: str | None, what: str) -> Iterator[None]:
    """Turn the client's and httpx's exceptions into one `ReviewError` line, without the key."""
    import httpx
    from argilla._exceptions import (
        ArgillaAPIError,
        ArgillaCredentialsError,
        ArgillaError,
        ForbiddenError,
        NotFoundError,
        UnauthorizedError,
    )

    def fail(message: str) -> ReviewError:
        return ReviewError(redact(f"Argilla at {url}: {message}", key))

    try:
        yield
    except ReviewError:
        raise
    except (ArgillaCredentialsError, UnauthorizedError):
        raise fail(f"the API key in {ENV_KEY} was rejected (401 unauthorized)") from None
    except ForbiddenError:
        raise fail(f"your user may not {what} (403 forbidden); an owner or admin role is needed") from None
    except NotFoundError as exc:
        raise fail(f"{what}: not found ({_detail(exc, key)})") from None
    except ArgillaAPIError as exc:
        raise fail(f"{what} failed: HTTP {exc.status_code} ({_detail(exc, key)})") from None
    except ArgillaError as exc:
        raise fail(f"{what} failed: {_detail(exc, key)}") from None
    except httpx.TimeoutException:
        raise fail(f"no answer in time while trying to {what}; is the server up?") from None
    except httpx.TransportError as exc:
        reason = _detail(exc, key) or type(exc).__name__
        raise fail(f"cannot connect ({reason}); check {ENV_URL} and that the server is running") from None


def _detail(exc: BaseException, key: str | None = None) -> str:
    text = " ".join(str(exc).split())
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) not in text:  # the client wraps the informative error in a generic one
        text = f"{text}: {' '.join(str(cause).split())}"
    text = redact(text, key)  # before the cut: a key cut in two would no longer be found
    return text[:300] + ("..." if len(text) > 300 else "")


# --- the dataset --------------------------------------------------------------------------------------------------
def settings(min_submitted: int, guidelines: str) -> Any:
    """Fields, questions and metadata of a review dataset (`factory.review.records` fills them)."""
    import argilla as rg

    terms = [rg.TermsMetadataProperty(name, title=name.replace("_", " ")) for name in R.TERMS]
    traits = [rg.FloatMetadataProperty(t, min=0.0, max=1.0, title=t) for t in R.FLOATS if t != "margin"]
    return rg.Settings(
        guidelines=guidelines,
        fields=[
            rg.TextField("prompt", title="Prompt", use_markdown=True),
            rg.TextField("target_profile", title="Target", use_markdown=True),
            rg.TextField("response_a", title="Response A", use_markdown=True),
            rg.TextField("response_b", title="Response B", use_markdown=True),
        ],
        questions=[
            rg.LabelQuestion(
                "better",
                labels={"a": "Response A", "b": "Response B"},
                title="Which response fits the target better?",
            ),
            rg.RatingQuestion(
                "rating",
                values=list(R.RATINGS),
                title="How well does the response you picked fit the target? (1 barely, 5 perfectly)",
                required=False,
            ),
            rg.TextQuestion("comment", title="Comment", required=False),
        ],
        metadata=[
            *terms,
            *traits,
            rg.FloatMetadataProperty("margin", title="judge margin"),
            rg.TermsMetadataProperty(R.ORDER, options=["chosen", "rejected"], visible_for_annotators=False),
        ],
        allow_extra_metadata=False,
        distribution=rg.TaskDistribution(min_submitted=min_submitted),
    )


def _workspace(conn: Connection, name: str | None) -> Any:
    spaces = conn.client.workspaces.list()
    if not spaces:
        raise ReviewError(f"Argilla at {conn.url}: your user belongs to no workspace; ask an owner to add you to one")
    if name is None:
        return spaces[0]
    for ws in spaces:
        if ws.name == name:
            return ws
    names = ", ".join(sorted(ws.name for ws in spaces))
    raise ReviewError(f"Argilla at {conn.url}: no workspace '{name}' for your user (yours: {names})")


def find(conn: Connection, name: str, workspace: str | None) -> tuple[Any, Any]:
    """(workspace, dataset or None)."""
    with errors(conn.url, conn._key, f"look up dataset '{name}'"):
        ws = _workspace(conn, workspace)
        with warnings.catch_warnings():  # "not found" is an answer here, not a warning
            warnings.simplefilter("ignore")
            return ws, conn.client.datasets(name=name, workspace=ws)


def export(
    conn: Connection, name: str, workspace: str | None, rows: list[dict], min_submitted: int, guidelines: str
) -> Exported:
    """Create the dataset (or reuse one with the same questions) and upsert `rows` (`records.record` dicts)."""
    import argilla as rg

    ws, dataset = find(conn, name, workspace)
    created = dataset is None
    where = f"dataset '{name}' in workspace '{ws.name}'"
    with errors(conn.url, conn._key, f"create {where}"):
        if dataset is None:
            dataset = rg.Dataset(
                name=name, workspace=ws, settings=settings(min_submitted, guidelines), client=conn.client
            ).create()
        else:
            _check_compatible(conn, dataset, where)
            have = getattr(dataset.settings.distribution, "min_submitted", None)
            if have is not None and have != min_submitted:  # Argilla keeps its own; the stage counts votes itself
                log.warning("%s completes a record after %s response(s); the review stage needs %s for a verdict",
                            where, have, min_submitted)  # fmt: skip
    with errors(conn.url, conn._key, f"upsert records into {where}"):
        batch = [
            rg.Record(
                id=r["id"],
                fields=r["fields"],
                metadata=r["metadata"],
                suggestions=[rg.Suggestion("better", type="model", **r["suggestion"])],
            )
            for r in rows
        ]
        if batch:
            dataset.records.log(batch, batch_size=min(UPSERT_BATCH, len(batch)))
    return Exported(name, ws.name, str(dataset.id), f"{conn.url}/dataset/{dataset.id}/annotation-mode", len(rows),
                    created)  # fmt: skip


def _check_compatible(conn: Connection, dataset: Any, where: str) -> None:
    have = {
        "fields": {f.name for f in dataset.settings.fields},
        "questions": {q.name for q in dataset.settings.questions},
        "metadata": {m.name for m in dataset.settings.metadata},
    }
    want = {"fields": set(R.FIELDS), "questions": set(R.QUESTIONS), "metadata": {*R.TERMS, *R.FLOATS, R.ORDER}}
    for kind in want:
        missing = sorted(want[kind] - have[kind])
        if missing:
            raise ReviewError(
                f"Argilla at {conn.url}: {where} exists but lacks the {kind} {', '.join(missing)} (made by another "
                "tool?); set the review stage's `dataset:` to another name, or delete that dataset"
            )


def fetch(conn: Connection, name: str, workspace: str | None, seed: int) -> list[dict]:
    """Every submitted response of the dataset as decision rows (`records.DECISION_KEYS`); drafts and discarded
    responses are left out."""
    ws, dataset = find(conn, name, workspace)
    if dataset is None:
        raise ReviewError(
            f"Argilla at {conn.url}: no dataset '{name}' in workspace '{ws.name}'; run `factory review export` first"
        )
    where = f"dataset '{name}' in workspace '{ws.name}'"
    with errors(conn.url, conn._key, f"read the records of {where}"):
        users = _user_names(conn, ws)
        out = []
        for record in dataset.records(with_suggestions=False, with_responses=True):
            pid = str(record.id)
            a_is = record.metadata.get(R.ORDER)
            by_user: dict[str, dict] = {}
            for response in record.responses:
                status = getattr(response.status, "value", response.status)
                if status != "submitted":
                    continue
                by_user.setdefault(str(response.user_id), {})[response.question_name] = response.value
            for user_id, values in by_user.items():
                better = values.get("better")
                if better not in ("a", "b"):
                    continue
                comment = values.get("comment")
                out.append(
                    {
                        "pair_id": pid,
                        "user": users.get(user_id, user_id),
                        "user_id": user_id,
                        "better": better,
                        "prefers": R.prefers(better, a_is, seed, pid),
                        "rating": int(values["rating"]) if values.get("rating") is not None else None,
                        "comment": comment.strip() if isinstance(comment, str) and comment.strip() else None,
                    }
                )
    return out


def _user_names(conn: Connection, ws: Any) -> dict[str, str]:
    """user id -> user name in the workspace; reviewers stay ids where this user may not list them."""
    from argilla._exceptions import ArgillaAPIError

    try:
        return {str(u.id): u.username for u in conn.client.api.users.list_by_workspace_id(ws.id)}
    except ArgillaAPIError as exc:  # 403 for an annotator's key
        log.warning("Argilla: cannot list the users of workspace '%s' (HTTP %s); reviewers are recorded by id",
                    ws.name, exc.status_code)  # fmt: skip
        return {}


def delete(conn: Connection, name: str, workspace: str | None) -> bool:
    """Delete the dataset; False when there was none."""
    ws, dataset = find(conn, name, workspace)
    if dataset is None:
        return False
    with errors(conn.url, conn._key, f"delete dataset '{name}' in workspace '{ws.name}'"):
        dataset.delete()
    return True
