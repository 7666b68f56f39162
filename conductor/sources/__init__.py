"""The inbound layer: pure functions from (headers, body bytes) to verified, normalized events.

No database and no HTTP framework here. Each source module offers ``verify_*`` (raises
SignatureInvalid) and ``parse_*`` (returns an InboundEvent or raises PayloadInvalid /
PayloadTooLarge); ``junit`` turns a test report into signals.
"""

from conductor.sources.cloudevents import (
    cloudevent_binary_headers,
    cloudevent_structured,
    parse_cloudevent,
    standard_webhook_headers,
    verify_standard_webhook,
)
from conductor.sources.errors import PayloadInvalid, PayloadTooLarge, SignatureInvalid, SourceError
from conductor.sources.events import CommitInfo, InboundEvent, SignalIn
from conductor.sources.generic import GenericEvent, generic_json_schema, parse_generic, verify_generic
from conductor.sources.github import github_signature, parse_github, verify_github
from conductor.sources.gitlab import parse_gitlab, verify_gitlab
from conductor.sources.junit import TestReportSummary, parse_junit, summarize_junit

__all__ = [
    "CommitInfo",
    "GenericEvent",
    "InboundEvent",
    "PayloadInvalid",
    "PayloadTooLarge",
    "SignalIn",
    "SignatureInvalid",
    "SourceError",
    "TestReportSummary",
    "cloudevent_binary_headers",
    "cloudevent_structured",
    "generic_json_schema",
    "github_signature",
    "parse_cloudevent",
    "parse_generic",
    "parse_github",
    "parse_gitlab",
    "parse_junit",
    "standard_webhook_headers",
    "summarize_junit",
    "verify_generic",
    "verify_github",
    "verify_gitlab",
    "verify_standard_webhook",
]
