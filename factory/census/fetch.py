"""`factory census fetch`: download ACS 1-year state tables from the Census API into the shipped layout.

Writes `acs<year>_1yr_state_<TABLE>.csv` (one row per state: GEO_ID, state_fips, state_po, state_name, then every
variable of the table) and `acs<year>_1yr_variables.csv` (VARIABLE, TYPE, LABEL, GROUP), which a recipe then reads
with `source: acs2018` and `census_dir: <folder>`. By default it also fetches the detailed tables by race that the
package does not ship, sex by age (B01001A-I) and sex by education (C15002A-I): with them in the folder the fit
constrains age x race/ethnicity and education x race/ethnicity (4 levels) from data (`acs2018_race.py`).
The key comes from CENSUS_API_KEY and is never written or printed; errors name the table and the HTTP status, not
the URL.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd

from factory.census.apiformat import api_json_to_frame, table_from_frame
from factory.census.states import states
from factory.errors import DataError, FactoryError

API = "https://api.census.gov/data"
KEY_ENV = "CENSUS_API_KEY"


def dataset_path(table: str) -> str:
    return "acs/acs1/subject" if table.startswith("S") else "acs/acs1/profile" if table.startswith("DP") else "acs/acs1"


def _scrub(text: str, key: str) -> str:
    """`text` without the key, as written or URL-encoded: error texts may quote the URL that carried it."""
    for form in {key, urllib.parse.quote(key, safe=""), urllib.parse.quote_plus(key)} if key else ():
        text = text.replace(form, "***")
    text = re.sub(r"([?&]key=)[^&\s'\"]*", r"\1***", text)  # however the URL was encoded
    return " ".join(text.split())[:300]


def _get(url: str, what: str, timeout: float) -> object:
    key = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get("key", [""])[0]
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (https or a test's loopback)
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise FactoryError(_scrub(f"census fetch: {what}: HTTP {exc.code} {exc.reason}", key)) from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FactoryError(_scrub(f"census fetch: {what}: network error ({reason})", key)) from None
    except Exception as exc:  # an URL urllib refuses (its message quotes the URL, key and all), a broken answer
        raise FactoryError(_scrub(f"census fetch: {what}: {type(exc).__name__}: {exc}", key)) from None
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        raise DataError(f"census fetch: {what}: the answer is not JSON (an invalid key gets an HTML page)") from None


def fetch(year: int, tables: list[str], out: Path, base_url: str = API, timeout: float = 60.0) -> list[Path]:
    key = os.environ.get(KEY_ENV)
    if not key:
        raise FactoryError(f"census fetch: set {KEY_ENV} (a free key from the Census Bureau) to use the Census API")
    try:
        parts = urllib.parse.urlsplit(base_url)
        ok = parts.scheme in ("http", "https") and parts.netloc and not parts.query and not parts.fragment
    except ValueError:  # "Invalid IPv6 URL" and the like
        ok = False
    if not ok:  # urllib's own error would quote the whole request URL, key included
        raise FactoryError(f"census fetch: --base-url '{base_url[:100]}' is not an http(s) URL like {API}")
    base_url = base_url.rstrip("/")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FactoryError(f"census fetch: cannot create {out}: {exc.strerror or exc}") from None
    by_fips = {s["state_fips"]: s for s in states()}
    written: list[Path] = []
    variables = []
    for table in tables:
        kind = dataset_path(table)
        query = urllib.parse.urlencode({"get": f"group({table})", "for": "state:*", "key": key})
        rows = _get(f"{base_url}/{year}/{kind}?{query}", f"{table} {year}", timeout)
        frame = api_json_to_frame(rows)  # type: ignore[arg-type]
        if "state" not in frame.columns:
            raise DataError(f"census fetch: {table} {year}: the answer has no 'state' column")
        frame = frame[frame["state"].isin(by_fips)].copy()
        frame.insert(1, "state_fips", frame["state"])
        frame.insert(2, "state_po", [by_fips[f]["state_po"] for f in frame["state"]])
        frame.insert(3, "state_name", [by_fips[f]["state_name"] for f in frame["state"]])
        frame = frame.drop(columns=[c for c in ("state", "NAME") if c in frame.columns])
        frame = frame.sort_values("state_fips").reset_index(drop=True)
        table_from_frame(frame, f"{table} {year}", table, {})  # the same checks as reading the file back
        path = out / f"acs{year}_1yr_state_{table}.csv"
        _write(frame, path)
        written.append(path)
        meta = _get(f"{base_url}/{year}/{kind}/groups/{table}.json", f"{table} {year} variables", timeout)
        for var, info in (meta.get("variables", {}) if isinstance(meta, dict) else {}).items():
            variables.append(
                {"VARIABLE": var, "TYPE": info.get("predicateType", ""), "LABEL": info.get("label", ""), "GROUP": table}
            )
    vpath = out / f"acs{year}_1yr_variables.csv"
    _write(pd.DataFrame(variables, columns=["VARIABLE", "TYPE", "LABEL", "GROUP"]), vpath)
    written.append(vpath)
    return written


def _write(frame: pd.DataFrame, path: Path) -> None:
    try:
        frame.to_csv(path, index=False)
    except OSError as exc:
        raise FactoryError(f"census fetch: cannot write {path}: {exc.strerror or exc}") from None
