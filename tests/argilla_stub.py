"""An in-memory Argilla v2 server on 127.0.0.1 for the review tests: the REST endpoints the `argilla` 2.x client
calls to log in, find workspaces and datasets, create and publish a dataset with its fields, questions and
metadata properties, upsert records and list them with their responses, with the server's checks that matter
here (API key on every request, unique names, records only in published datasets, known fields, metadata and
questions, label values, suggestion scores in [0, 1]).

Every request is kept in `requests` (method, path, query, JSON body, the API key header) for assertions, and a
request to an endpoint the stub does not know is answered 404 and kept in `unknown`. Reviewers are simulated
with `respond` / `vote`, which write responses straight into the store.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from http_stub import send_json

NOW = "2025-01-01T00:00:00"


class HTTPError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def _id() -> str:
    return str(uuid.uuid4())


class ArgillaStub:
    def __init__(self, api_key: str = "argilla.apikey-stub", workspace: str = "argilla"):
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.unknown: list[str] = []
        self.lock = threading.Lock()
        self.users: dict[str, dict] = {}
        self.workspaces: dict[str, dict] = {}
        self.members: dict[str, list[str]] = {}  # workspace id -> user ids
        self.datasets: dict[str, dict] = {}
        self.fields: dict[str, list[dict]] = {}
        self.questions: dict[str, list[dict]] = {}
        self.metadata: dict[str, list[dict]] = {}
        self.records: dict[str, list[dict]] = {}  # dataset id -> records in insertion order
        self.owner = self.add_user("owner", role="owner")
        self.workspace = self.add_workspace(workspace)
        self.routes = [
            ("GET", r"/api/v1/me", self.me),
            ("GET", r"/api/v1/me/workspaces", self.my_workspaces),
            ("GET", r"/api/v1/workspaces/(?P<ws>[^/]+)", self.get_workspace),
            ("GET", r"/api/v1/workspaces/(?P<ws>[^/]+)/users", self.workspace_users),
            ("GET", r"/api/v1/me/datasets", self.list_datasets),
            ("POST", r"/api/v1/datasets", self.create_dataset),
            ("GET", r"/api/v1/datasets/(?P<ds>[^/]+)", self.get_dataset),
            ("PATCH", r"/api/v1/datasets/(?P<ds>[^/]+)", self.update_dataset),
            ("DELETE", r"/api/v1/datasets/(?P<ds>[^/]+)", self.delete_dataset),
            ("PUT", r"/api/v1/datasets/(?P<ds>[^/]+)/publish", self.publish),
            ("POST", r"/api/v1/datasets/(?P<ds>[^/]+)/fields", self.create_field),
            ("GET", r"/api/v1/datasets/(?P<ds>[^/]+)/fields", self.list_of("fields")),
            ("POST", r"/api/v1/datasets/(?P<ds>[^/]+)/questions", self.create_question),
            ("GET", r"/api/v1/datasets/(?P<ds>[^/]+)/questions", self.list_of("questions")),
            ("POST", r"/api/v1/datasets/(?P<ds>[^/]+)/metadata-properties", self.create_metadata),
            ("GET", r"/api/v1/me/datasets/(?P<ds>[^/]+)/metadata-properties", self.list_of("metadata")),
            ("GET", r"/api/v1/datasets/(?P<ds>[^/]+)/vectors-settings", lambda ds, **_: {"items": []}),
            ("PUT", r"/api/v1/datasets/(?P<ds>[^/]+)/records/bulk", self.upsert_records),
            ("GET", r"/api/v1/datasets/(?P<ds>[^/]+)/records", self.list_records),
        ]
        handler = type("Handler", (_Handler,), {"stub": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- fixtures ---------------------------------------------------------------------------------------------
    def add_user(self, username: str, role: str = "annotator") -> dict:
        user = {"id": _id(), "username": username, "role": role, "first_name": username, "last_name": None,
                "inserted_at": NOW, "updated_at": NOW}  # fmt: skip
        self.users[user["id"]] = user
        for members in self.members.values():
            members.append(user["id"])
        return user

    def add_workspace(self, name: str) -> dict:
        ws = {"id": _id(), "name": name, "inserted_at": NOW, "updated_at": NOW}
        self.workspaces[ws["id"]] = ws
        self.members[ws["id"]] = list(self.users)
        return ws

    def dataset(self, name: str) -> dict:
        return next(d for d in self.datasets.values() if d["name"] == name)

    def record(self, dataset: str, external_id: str) -> dict:
        return next(r for r in self.records[self.dataset(dataset)["id"]] if r["external_id"] == external_id)

    def respond(self, dataset: str, pair_id: str, username: str, values: dict, status: str = "submitted") -> None:
        """Store `username`'s response (question name -> value) to the record of `pair_id`, as the UI would."""
        with self.lock:
            user = next((u for u in self.users.values() if u["username"] == username), None) or self.add_user(username)
            record = self.record(dataset, pair_id)
            record["responses"] = [r for r in record["responses"] if r["user_id"] != user["id"]]
            record["responses"].append(
                {
                    "id": _id(),
                    "values": {k: {"value": v} for k, v in values.items()},
                    "status": status,
                    "user_id": user["id"],
                    "inserted_at": NOW,
                    "updated_at": NOW,
                }  # fmt: skip
            )

    def vote(self, dataset: str, pair_id: str, username: str, prefers: str, **values: Any) -> None:
        """A submitted response preferring the judge's 'chosen' or 'rejected', whichever letter shows it."""
        a_is = self.record(dataset, pair_id)["metadata"]["a_is"]
        self.respond(dataset, pair_id, username, {"better": "a" if a_is == prefers else "b", **values})

    # --- HTTP ---------------------------------------------------------------------------------------------------
    def handle(self, method: str, target: str, headers: Any, body: bytes) -> tuple[int, Any]:
        parts = urlsplit(target)
        query = parse_qs(parts.query)
        payload = json.loads(body) if body else None
        key = headers.get("X-Argilla-Api-Key")
        with self.lock:
            self.requests.append(
                {"method": method, "path": parts.path, "query": query, "json": payload, "api_key": key}
            )
            if key != self.api_key:
                return 401, {"detail": "Could not validate credentials"}
            for verb, pattern, fn in self.routes:
                m = re.fullmatch(pattern, parts.path)
                if verb == method and m:
                    try:
                        return 200, fn(**m.groupdict(), query=query, body=payload)
                    except HTTPError as exc:
                        return exc.status, {"detail": exc.detail}
            self.unknown.append(f"{method} {parts.path}")
            return 404, {"detail": "Not Found"}

    # --- users and workspaces ---------------------------------------------------------------------------------
    def me(self, **_):
        return self.owner

    def my_workspaces(self, **_):
        return {"items": list(self.workspaces.values())}

    def get_workspace(self, ws, **_):
        if ws not in self.workspaces:
            raise HTTPError(404, f"Workspace with id `{ws}` not found")
        return self.workspaces[ws]

    def workspace_users(self, ws, **_):
        return {"items": [self.users[u] for u in self.members[self.get_workspace(ws)["id"]]]}

    # --- datasets ---------------------------------------------------------------------------------------------
    def list_datasets(self, **_):
        return {"items": list(self.datasets.values())}

    def _dataset(self, ds: str) -> dict:
        if ds not in self.datasets:
            raise HTTPError(404, f"Dataset with id `{ds}` not found")
        return self.datasets[ds]

    def create_dataset(self, body, **_):
        if body.get("workspace_id") not in self.workspaces:
            raise HTTPError(404, f"Workspace with id `{body.get('workspace_id')}` not found")
        if any(d["name"] == body["name"] and d["workspace_id"] == body["workspace_id"] for d in self.datasets.values()):
            raise HTTPError(409, f"Dataset with name `{body['name']}` already exists")
        ds = {"id": _id(), "name": body["name"], "status": "draft", "guidelines": body.get("guidelines"),
              "allow_extra_metadata": body.get("allow_extra_metadata", True),
              "distribution": body.get("distribution") or {"strategy": "overlap", "min_submitted": 1},
              "workspace_id": body["workspace_id"], "last_activity_at": NOW, "inserted_at": NOW,
              "updated_at": NOW}  # fmt: skip
        self.datasets[ds["id"]] = ds
        for kind in (self.fields, self.questions, self.metadata, self.records):
            kind[ds["id"]] = []
        return ds

    def get_dataset(self, ds, **_):
        return self._dataset(ds)

    def update_dataset(self, ds, body, **_):
        d = self._dataset(ds)
        for key in ("name", "guidelines", "allow_extra_metadata", "distribution"):
            if key in body and body[key] is not None:
                d[key] = body[key]
        return d

    def delete_dataset(self, ds, **_):
        return self.datasets.pop(self._dataset(ds)["id"])

    def publish(self, ds, **_):
        d = self._dataset(ds)
        if d["status"] == "ready":
            raise HTTPError(422, "Dataset is already published")
        if not self.fields[ds] or not any(q["required"] for q in self.questions[ds]):
            raise HTTPError(422, "Dataset cannot be published without fields and a required question")
        d["status"] = "ready"
        return d

    def _setting(self, kind: dict, ds: str, body: dict, extra: dict) -> dict:
        d = self._dataset(ds)
        if d["status"] == "ready":
            raise HTTPError(422, "Dataset is published: its settings cannot be added to")
        if any(x["name"] == body["name"] for x in kind[ds]):
            raise HTTPError(409, f"`{body['name']}` already exists in this dataset")
        item = {"id": _id(), "name": body["name"], "title": body.get("title") or body["name"],
                "settings": body["settings"], "dataset_id": ds, "inserted_at": NOW, "updated_at": NOW,
                **extra}  # fmt: skip
        kind[ds].append(item)
        return item

    def create_field(self, ds, body, **_):
        return self._setting(self.fields, ds, body, {"required": body.get("required", True),
                                                      "description": body.get("description")})  # fmt: skip

    def create_question(self, ds, body, **_):
        return self._setting(self.questions, ds, body, {"required": body.get("required", True),
                                                         "description": body.get("description")})  # fmt: skip

    def create_metadata(self, ds, body, **_):
        visible = body.get("visible_for_annotators", True)
        return self._setting(self.metadata, ds, body, {"visible_for_annotators": visible})

    def list_of(self, kind: str):
        return lambda ds, **_: {"items": getattr(self, kind)[self._dataset(ds)["id"]]}

    # --- records ----------------------------------------------------------------------------------------------
    def upsert_records(self, ds, body, **_):
        d = self._dataset(ds)
        if d["status"] != "ready":
            raise HTTPError(422, "Records cannot be added to a dataset that is not published")
        items, updated = [], []
        for item in body["items"]:
            record = self._validated(ds, item)
            existing = next((r for r in self.records[ds] if (item.get("id") and r["id"] == item["id"])
                             or r["external_id"] == item.get("external_id")), None)  # fmt: skip
            if existing is None:
                self.records[ds].append(record)
            else:
                record["id"], record["responses"] = existing["id"], existing["responses"]
                existing.update(record)
                record = existing
                updated.append(record["id"])
            items.append(self._shown(record, ["suggestions", "responses"]))
        return {"items": items, "updated_item_ids": updated}

    def _validated(self, ds: str, item: dict) -> dict:
        fields = {f["name"]: f for f in self.fields[ds]}
        for name in item.get("fields") or {}:
            if name not in fields:
                raise HTTPError(422, f"found fields values for non configured fields: {name!r}")
        for name, f in fields.items():
            if f["required"] and not (item.get("fields") or {}).get(name):
                raise HTTPError(422, f"missing required value for field: {name!r}")
        props = {m["name"]: m for m in self.metadata[ds]}
        for name, value in (item.get("metadata") or {}).items():
            if name not in props:
                if not self.datasets[ds]["allow_extra_metadata"]:
                    raise HTTPError(422, f"metadata property {name!r} not found in dataset")
                continue
            s = props[name]["settings"]
            if s["type"] == "terms" and s.get("values") and value not in s["values"]:
                raise HTTPError(422, f"{value!r} is not an allowed term for {name!r}")
            if s["type"] == "float" and not (
                isinstance(value, (int, float))
                and (s.get("min") is None or value >= s["min"])
                and (s.get("max") is None or value <= s["max"])
            ):
                raise HTTPError(422, f"{value!r} is not a valid value for float metadata {name!r}")
        questions = {q["id"]: q for q in self.questions[ds]}
        suggestions = []
        for s in item.get("suggestions") or []:
            q = questions.get(s.get("question_id"))
            if q is None:
                raise HTTPError(422, f"question_id={s.get('question_id')} does not exist in the dataset")
            if q["settings"]["type"] == "label_selection":
                allowed = [o["value"] for o in q["settings"]["options"]]
                if s["value"] not in allowed:
                    raise HTTPError(422, f"{s['value']!r} is not a valid label for question {q['name']!r}")
            if s.get("score") is not None and not 0 <= s["score"] <= 1:
                raise HTTPError(422, "suggestion score must be in [0, 1]")
            suggestions.append({"id": _id(), "question_id": q["id"], "type": s.get("type"), "score": s.get("score"),
                                "value": s["value"], "agent": s.get("agent"), "inserted_at": NOW,
                                "updated_at": NOW})  # fmt: skip
        return {"id": _id(), "external_id": item.get("external_id"), "fields": item.get("fields"),
                "metadata": item.get("metadata") or None, "suggestions": suggestions, "responses": [],
                "dataset_id": ds, "inserted_at": NOW, "updated_at": NOW}  # fmt: skip

    def _shown(self, record: dict, include: list[str]) -> dict:
        need = self.datasets[record["dataset_id"]]["distribution"]["min_submitted"]
        submitted = sum(r["status"] == "submitted" for r in record["responses"])
        out = {k: v for k, v in record.items() if k not in ("suggestions", "responses")}
        out["status"] = "completed" if submitted >= need else "pending"
        for key in ("suggestions", "responses"):
            if key in include:
                out[key] = record[key]
        return out

    def list_records(self, ds, query, **_):
        self._dataset(ds)
        offset, limit = int(query.get("offset", ["0"])[0]), int(query.get("limit", ["50"])[0])
        include = query.get("include", [])
        page = self.records[ds][offset : offset + limit]
        return {"items": [self._shown(r, include) for r in page], "total": len(self.records[ds])}


class _Handler(BaseHTTPRequestHandler):
    stub: ArgillaStub
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, payload = self.stub.handle(self.command, self.path, self.headers, body)
        send_json(self, payload, status)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass
