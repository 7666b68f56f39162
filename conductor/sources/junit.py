"""JUnit XML test reports -> test signals, refusing hostile XML before it can cost memory.

Order of defences: the byte size is checked first (``PayloadTooLarge``, nothing parsed); the XML is
then parsed by defusedxml with DTDs forbidden, so a ``<!DOCTYPE``/``<!ENTITY`` (billion laughs,
external entities) stops the streaming parser at the declaration, before any expansion. Whatever
else the parser raises (an encoding it cannot read, undecodable bytes, malformed XML) becomes
``PayloadInvalid``, never a 500.

Counting is done on the ``<testcase>`` elements, not on the ``tests=``/``failures=`` attributes,
which reporters get wrong (pytest's subtests, jest's root without ``skipped``). Each case is exactly
one of error > failure > skipped > passed. A case reported more than once in the same suite
(same classname and name, e.g. Gradle's test-retry plugin) is one test whose result is its last
attempt; it is flaky when that last attempt passed after a failed or errored one. Surefire's
``<flakyFailure>``/``<flakyError>`` (failed, then passed on rerun) also mark a case flaky;
``<rerunFailure>``/``<rerunError>`` on a case that still failed mean it failed every time.
"""

from __future__ import annotations

import re
from typing import Any

from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import ParseError, fromstring
from junitparser import JUnitXml, JUnitXmlError, TestCase, TestSuite
from pydantic import BaseModel

from conductor.sources.errors import PayloadInvalid, PayloadTooLarge
from conductor.sources.events import SignalIn

DEFAULT_MAX_BYTES = 5_000_000
_FLAKY_TAGS = frozenset({"flakyFailure", "flakyError"})
_RERUN_TAGS = frozenset({"rerunFailure", "rerunError"})
_DECLARED_ENCODING = re.compile(rb"""\A(?:\xef\xbb\xbf)?\s*<\?xml\b[^>]*?\bencoding\s*=\s*["']([^"']*)["']""")
_MAX_DETAIL = 120  # characters of a parser message or a declared name quoted back to the sender


class TestReportSummary(BaseModel):
    """Counts for one report. ``passed = total - failed - errors - skipped``.

    ``pass_rate`` is passed / (total - skipped), None when nothing was executed. ``flaky`` is None
    when the report shows no retries (unknown, not zero).
    """

    __test__ = False  # not a pytest test class despite the name

    total: int
    failed: int
    errors: int
    skipped: int
    passed: int
    pass_rate: float | None
    flaky: int | None = None

    @property
    def executed(self) -> int:
        return self.total - self.skipped

    def signals(self) -> list[SignalIn]:
        """The ``tests_*`` signals (see ``conductor.sources.events``)."""
        out = [
            SignalIn(name="tests_total", value=self.total),
            SignalIn(name="tests_failed", value=self.failed),
            SignalIn(name="tests_errors", value=self.errors),
            SignalIn(name="tests_skipped", value=self.skipped),
        ]
        if self.pass_rate is not None:
            out.append(SignalIn(name="tests_pass_rate", value=self.pass_rate, samples=self.executed))
        if self.flaky is not None:
            out.append(SignalIn(name="tests_flaky", value=self.flaky))
        return out


def parse_junit(body: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> list[SignalIn]:
    """The ``tests_*`` signals of a JUnit XML report (see ``summarize_junit`` for the failures)."""
    return summarize_junit(body, max_bytes).signals()


def summarize_junit(body: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> TestReportSummary:
    """Count a JUnit XML report with a ``<testsuites>`` or bare ``<testsuite>`` root.

    Raises PayloadTooLarge when ``body`` exceeds ``max_bytes`` (checked before parsing);
    PayloadInvalid with field ``xml.doctype`` for any DOCTYPE, ``xml.entity`` / ``xml.external``
    for entity declarations or external references, ``xml.encoding`` for an encoding declaration
    the parser cannot use, ``xml`` for malformed or undecodable XML and ``xml.root`` when the root
    element is not ``testsuites``/``testsuite``.
    """
    if len(body) > max_bytes:
        raise PayloadTooLarge(len(body), max_bytes)
    root = _parse_xml(body)
    try:
        report = JUnitXml.fromroot(root)
    except JUnitXmlError:
        raise PayloadInvalid(f"root element must be <testsuites> or <testsuite>, got <{root.tag}>", field="xml.root") from None
    return _count(report)


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL] + "..."


def _parse_xml(body: bytes) -> Any:
    try:
        return fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DTDForbidden:
        raise PayloadInvalid("DOCTYPE declarations are not accepted", field="xml.doctype") from None
    except EntitiesForbidden:
        raise PayloadInvalid("ENTITY declarations are not accepted", field="xml.entity") from None
    except ExternalReferenceForbidden:
        raise PayloadInvalid("external references are not accepted", field="xml.external") from None
    except ParseError as exc:
        raise PayloadInvalid(f"malformed XML: {_clip(str(exc))}", field="xml") from None
    except LookupError as exc:
        # expat asks Python for an encoding it does not know itself: an unknown name ("x-bogus")
        # or a codec that is not a text encoding ("rot13", "zip") raises LookupError
        raise PayloadInvalid(_unusable_encoding(body, exc), field="xml.encoding") from None
    except ValueError as exc:
        # UnicodeDecodeError and friends, "multi-byte encodings are not supported" (shift_jis, utf-7)
        raise PayloadInvalid(f"unreadable XML: {_clip(str(exc))}", field="xml") from None


def _unusable_encoding(body: bytes, exc: LookupError) -> str:
    declared = _DECLARED_ENCODING.match(body[:1024])
    if declared is None:  # e.g. a UTF-16 declaration: the parser's own message names the encoding
        return f"the XML declares an encoding that cannot be read ({_clip(str(exc))})"
    name = declared.group(1).decode("ascii", "backslashreplace")
    return f"the XML declares encoding {_clip(name)!r}, which this parser cannot read (UTF-8 always works)"


def _state(case: TestCase) -> str:
    if case.is_error:
        return "error"
    if case.is_failure:
        return "failure"
    if case.is_skipped:
        return "skipped"
    return "passed"


def _suites(report: JUnitXml) -> list[TestSuite]:
    """Every suite, nested ones included, without recursion (hostile nesting depth is harmless)."""
    out: list[TestSuite] = []
    stack = list(reversed(list(report)))
    while stack:
        suite = stack.pop()
        out.append(suite)
        stack.extend(reversed(list(suite.testsuites())))
    return out


def _count(report: JUnitXml) -> TestReportSummary:
    # key -> list of (state, surefire_flaky, surefire_rerun) per attempt, in document order
    attempts: dict[tuple[Any, ...], list[tuple[str, bool, bool]]] = {}
    for index, suite in enumerate(_suites(report)):
        for position, case in enumerate(suite.iterchildren(TestCase)):
            tags = {child.tag for child in case._elem}
            record = (_state(case), bool(tags & _FLAKY_TAGS), bool(tags & _RERUN_TAGS))
            # unnamed cases can't be recognised as retries: each one is its own test
            key = (index, case.classname, case.name) if case.name else (index, position, None)
            attempts.setdefault(key, []).append(record)

    counts = {"error": 0, "failure": 0, "skipped": 0, "passed": 0}
    flaky = 0
    retries_visible = False
    for runs in attempts.values():
        final, surefire_flaky, surefire_rerun = runs[-1]
        counts[final] += 1
        earlier_failed = any(state in ("error", "failure") for state, _, _ in runs[:-1])
        if len(runs) > 1 or any(f or r for _, f, r in runs):
            retries_visible = True
        if final == "passed" and (earlier_failed or surefire_flaky or surefire_rerun):
            flaky += 1

    total = len(attempts)
    executed = total - counts["skipped"]
    return TestReportSummary(
        total=total,
        failed=counts["failure"],
        errors=counts["error"],
        skipped=counts["skipped"],
        passed=counts["passed"],
        pass_rate=counts["passed"] / executed if executed else None,
        flaky=flaky if retries_visible else None,
    )
