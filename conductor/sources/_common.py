"""Small helpers shared by the source parsers: headers, JSON, timestamps, and the field types and
validation of the pydantic models each source declares for the payload subset it reads."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    ValidationError,
)
from pydantic_core import ErrorDetails

from conductor.sources.errors import PayloadInvalid


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
        raise PayloadInvalid(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos})", field=field) from None
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


# --------------------------------------------------------------------------- payload models
#
# Each source declares small pydantic models of the payload subset it reads and validates a parsed
# body with ``validate``. The field types below carry the rules the parsers rely on.


def _empty_is_none(value: Any) -> Any:
    return None if value == "" else value


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _is_true(value: Any) -> bool:
    return value is True


def _object_or_none(value: Any) -> Any:
    return value if isinstance(value, dict) else None


ReqStr = Annotated[StrictStr, Field(min_length=1)]
"""A required non-empty string."""

OptStr = Annotated[StrictStr | None, BeforeValidator(_empty_is_none)]
"""An optional string: absent, null and ``""`` all give None; any other type is refused."""

LooseStr = Annotated[str | None, BeforeValidator(_str_or_none)]
"""A string that only describes (never refuses): anything but a non-empty string gives None."""

Flag = Annotated[bool, BeforeValidator(_is_true)]
"""True only for JSON ``true``; absent, null, ``"true"``, 1 ... are False."""

Timestamp = Annotated[datetime | None, BeforeValidator(parse_time)]
"""A best-effort time (see ``parse_time``): an unparseable value gives None, never a refusal."""

T = TypeVar("T")

OptObject = Annotated[T | None, BeforeValidator(_object_or_none)]
"""An optional nested object (``OptObject[Model]``): anything but a JSON object gives None."""

M = TypeVar("M", bound=BaseModel)


class Payload(BaseModel):
    """Base of the payload-subset models: fields Conductor does not read are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


def validate(model: type[M], data: Any, prefix: str | None = None) -> M:
    """``model.model_validate(data)``, with a ValidationError turned into PayloadInvalid by
    ``payload_invalid`` (``prefix`` names where ``data`` sits in the delivery, e.g. ``"data"``)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise payload_invalid(exc, prefix) from None


def payload_invalid(exc: ValidationError, prefix: str | None = None) -> PayloadInvalid:
    """PayloadInvalid for the first error of ``exc``.

    ``field`` is the error location joined with "." (``commits.0.id``), after ``prefix`` when given
    (``data.subject.id``); with an empty location it is ``prefix``, else ``"body"``. The message
    says what was expected and what came (``expected a string, got 5``) and counts further errors.
    """
    errors = exc.errors(include_url=False)
    first = errors[0]
    parts = ([prefix] if prefix else []) + [str(part) for part in first["loc"]]
    more = len(errors) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return PayloadInvalid(_message(first) + suffix, field=".".join(parts) or "body")


_EXPECTED = {
    "string_type": "a string",
    "string_too_short": "a non-empty string",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "dict_type": "an object",
    "list_type": "a list",
}


def _message(error: ErrorDetails) -> str:
    if error["type"] == "missing":
        return "required field is missing"
    expected = _EXPECTED.get(error["type"])
    if expected is None:
        return error["msg"]
    return f"expected {expected}, got {_describe(error['input'])}"


def _describe(value: Any) -> str:
    """A short JSON rendering of an offending value (objects and lists only by their kind)."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."
