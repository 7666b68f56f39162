"""Errors raised by the inbound layer when a delivery is refused.

``SourceError`` is a ``ConductorError`` (conductor.domain.errors imports nothing of ours, so no cycle).
Each subclass carries the HTTP status the API layer answers with (``http_status``).
"""

from conductor.domain.errors import ConductorError


class SourceError(ConductorError):
    """Root of everything the inbound layer refuses; the message says what and why."""

    http_status = 400


class SignatureInvalid(SourceError):
    """The delivery could not be authenticated (answer 401).

    Raised when the signature/token header is missing, malformed, does not match the body, or
    (Standard Webhooks) the signed timestamp is outside the tolerance. The message names the header
    or check that failed, never the expected secret or digest.
    """

    http_status = 401


class PayloadInvalid(SourceError):
    """The delivery is authentic but its content cannot be used (answer 422).

    ``field`` names what is wrong: a dotted JSON path (``"workflow_run.head_sha"``), a header name
    (``"X-GitHub-Event"``), ``"body"`` for unparseable JSON, or ``"xml"`` / ``"xml.doctype"`` for
    XML problems. It is ``None`` when no single field is to blame.
    """

    http_status = 422

    def __init__(self, message: str, field: str | None = None):
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)
        self.detail = message


class PayloadTooLarge(SourceError):
    """The body is bigger than the configured limit and was not parsed (answer 413)."""

    http_status = 413

    def __init__(self, size: int, limit: int):
        self.size = size
        self.limit = limit
        super().__init__(f"body is {size} bytes, the limit is {limit} bytes")
