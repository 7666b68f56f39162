"""JUnit XML test reports -> test signals, refusing hostile XML before it can cost memory.

Order of defences: the byte size is checked first (``PayloadTooLarge``, nothing parsed); the XML is
then parsed by defusedxml with DTDs forbidden, so a ``<!DOCTYPE``/``<!ENTITY`` (billion laughs,
external entities) stops the streaming parser at the declaration, before any expansion. Whatever
else the parser raises (an encoding it cannot read, undecodable bytes, malformed XML) becomes
``PayloadInvalid``, never a 500.

Counting is done on the ``<testcase>`` elements, not on the ``tests=``/``failures=`` attributes,
which reporters get wrong (pytest's subtests, jest's root without ``skipped``, gotestsum's package
failures, GoogleTest's ad hoc cases). Every ``<testcase>`` element is one test, counted once, even
when another case has the same classname and name: jest repeats names across ``describe`` blocks,
TestNG data providers and ``go test -count=N`` repeat them, and so does Gradle's test-retry plugin,
which without ``reports.junitXml.mergeReruns`` writes each attempt as a separate case with nothing
marking it a rerun. A failed case therefore stays failed whatever other cases of its name say.

Each case is exactly one of error > failure > skipped > passed, judged by its own child elements.
A case is also skipped (not executed) when its reporter says so in an attribute:
``status="disabled"``/``"notrun"`` (CTest ``--output-junit``, cmCTestTestHandler::WriteJUnitXML;
GoogleTest's DISABLED_ tests) or ``result="skipped"``/``"suppressed"`` (GoogleTest
1.10, which wrote skipped tests without a ``<skipped>`` child).

Retries are recognised only where the report says so, in the format Maven Surefire documents for
``rerunFailingTestsCount`` (maven.apache.org/surefire/maven-surefire-plugin/examples/rerun-failing-tests.html),
which Gradle also writes when ``mergeReruns`` is on: ``<flakyFailure>``/``<flakyError>`` in a case
that finally passed (counted passed, and flaky) and ``<rerunFailure>``/``<rerunError>`` beside the
``<failure>``/``<error>`` of a case that failed every time. No reporter we found documents a retry
attribute on ``<testcase>``, so none is read.

The elements are read with defusedxml's ElementTree directly rather than through junitparser: the
counts depend on exactly what junitparser does not model (Surefire's flaky/rerun children, the
not-run attributes above), so its objects would only be unwrapped again.
"""

from __future__ import annotations

import re
from xml.etree.ElementTree import Element

from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import ParseError, fromstring
from pydantic import BaseModel

from conductor.sources.errors import PayloadInvalid, PayloadTooLarge
from conductor.sources.events import SignalIn

DEFAULT_MAX_BYTES = 5_000_000
_FLAKY_TAGS = frozenset({"flakyFailure", "flakyError"})
_RERUN_TAGS = frozenset({"rerunFailure", "rerunError"})
# <testcase> attributes meaning "not executed" (see the module docstring for who writes them)
_NOT_RUN_STATUS = frozenset({"disabled", "notrun"})
_NOT_RUN_RESULT = frozenset({"skipped", "suppressed"})
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
    if root.tag not in ("testsuites", "testsuite"):
        raise PayloadInvalid(f"root element must be <testsuites> or <testsuite>, got <{_clip(str(root.tag))}>", field="xml.root")
    return _count(root)


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL] + "..."


def _parse_xml(body: bytes) -> Element:
    try:
        root: Element = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)  # defusedxml is untyped
        return root
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


def _suites(root: Element) -> list[Element]:
    """Every ``<testsuite>``, nested ones included, without recursion (hostile nesting depth is harmless)."""
    out: list[Element] = []
    stack = [root] if root.tag == "testsuite" else [child for child in root if child.tag == "testsuite"]
    while stack:
        suite = stack.pop()
        out.append(suite)
        stack.extend(child for child in suite if child.tag == "testsuite")
    return out


def _state(case: Element, tags: set[str]) -> str:
    """error > failure > skipped > passed, from the case's own children and not-run attributes."""
    if "error" in tags:
        return "error"
    if "failure" in tags:
        return "failure"
    status = (case.get("status") or "").strip().lower()
    result = (case.get("result") or "").strip().lower()
    if "skipped" in tags or status in _NOT_RUN_STATUS or result in _NOT_RUN_RESULT:
        return "skipped"
    return "passed"


def _count(root: Element) -> TestReportSummary:
    counts = {"error": 0, "failure": 0, "skipped": 0, "passed": 0}
    flaky = 0
    retries_visible = False
    for suite in _suites(root):
        for case in suite:
            if case.tag != "testcase":
                continue
            tags = {child.tag for child in case}
            state = _state(case, tags)
            counts[state] += 1
            reran = bool(tags & (_FLAKY_TAGS | _RERUN_TAGS))
            retries_visible = retries_visible or reran
            if state == "passed" and reran:
                flaky += 1

    total = sum(counts.values())
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
