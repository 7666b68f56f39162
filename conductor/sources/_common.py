"""Small helpers shared by the source parsers: headers, JSON, field access, timestamps."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from conductor.sources.errors import PayloadInvalid

_MISSING = object()


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names lower-cased (HTTP header names are case-insensitive), values stripped."""
    return {str(k).lower(): str(v).strip() for k, v in headers.items()}


def require_header(headers: Mapping[str, str], name: str) -> str:
    """The value of header ``name`` from already-lowered ``headers``.

    Raises PayloadInvalid(field=name) when it is missing or empty.
    """
    value = headers.get(name.lower(), "")
    if not value:
        raise PayloadInvalid(f"missing header {name}", field=name)
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def load_json(body: bytes | str, field: str = "body") -> Any:
    """Parse ``body`` as strict JSON (NaN / Infinity refused).

    Raises PayloadInvalid(field=field) with the line, column and character position of the error,
    or when the body is not UTF-8/16/32 or is nested too deeply to parse.
    """
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise PayloadInvalid(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos})", field=field
        ) from None
    except UnicodeDecodeError as exc:
        raise PayloadInvalid(f"body is not valid UTF-8 JSON (byte {exc.start})", field=field) from None
    except RecursionError:
        raise PayloadInvalid("JSON is nested too deeply", field=field) from None
    except ValueError as exc:  # NaN / Infinity
        raise PayloadInvalid(f"malformed JSON: {exc}", field=field) from None


def load_json_object(body: bytes | str, field: str = "body") -> dict[str, Any]:
    """Like ``load_json`` but the top level must be an object; PayloadInvalid(field) otherwise."""
    data = load_json(body, field)
    if not isinstance(data, dict):
        raise PayloadInvalid(f"expected a JSON object, got {type(data).__name__}", field=field)
    return data


def get(obj: Any, path: str, default: Any = None) -> Any:
    """Walk a dotted ``path`` through nested dicts (and lists, by index: ``commits.0.id``);
    ``default`` when any step is absent or null."""
    cur = obj
    for part in path.split("."):
        if isinstance(cur, dict):
            cur = cur.get(part, _MISSING)
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return default
        if cur is _MISSING or cur is None:
            return default
    return cur


def req_str(obj: Any, path: str) -> str:
    """The non-empty string at dotted ``path``; PayloadInvalid(field=path) if absent or not a string."""
    value = get(obj, path)
    if value is None:
        raise PayloadInvalid("required field is missing", field=path)
    if not isinstance(value, str) or not value:
        raise PayloadInvalid(f"expected a non-empty string, got {value!r}", field=path)
    return value


def opt_str(obj: Any, path: str) -> str | None:
    """The string at dotted ``path``, None if absent or empty; PayloadInvalid(field=path) if not a string."""
    value = get(obj, path)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PayloadInvalid(f"expected a string, got {type(value).__name__}", field=path)
    return value


def req_dict(obj: Any, path: str) -> dict[str, Any]:
    """The object at dotted ``path``; PayloadInvalid(field=path) if absent or not an object."""
    value = get(obj, path)
    if not isinstance(value, dict):
        raise PayloadInvalid("required object is missing" if value is None else "expected an object", field=path)
    return value


def strip_heads(ref: str | None) -> str | None:
    """``refs/heads/main`` -> ``main``; other values unchanged."""
    if ref is None:
        return None
    return ref.removeprefix("refs/heads/")


def parse_time(value: Any) -> datetime | None:
    """Best-effort timestamp: ISO 8601 (``Z`` allowed), GitLab's ``2016-09-28 20:22:34 UTC``, or
    unix seconds. Returns an aware UTC datetime, or None when absent or unparseable (timestamps are
    informative only, so a bad one never refuses a delivery)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value, tz=UTC)
        if not isinstance(value, str) or not value.strip():
            return None
        text = value.strip()
        if text.endswith(" UTC"):
            text = text[: -len(" UTC")] + "+00:00"
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        parsed = datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
