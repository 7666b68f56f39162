from datetime import UTC, datetime

import httpx
import pytest
from pydantic import ValidationError

from conductor.actions.http import failure, retry_after_s
from conductor.connect.credentials import CredentialError, CredentialRef


def test_a_reference_names_exactly_one_place():
    with pytest.raises(ValidationError, match="exactly one"):
        CredentialRef()
    with pytest.raises(ValidationError, match="exactly one"):
        CredentialRef(env="A", file="/b")
    with pytest.raises(ValidationError):
        CredentialRef(env="not a name")


def test_a_secret_is_read_from_the_environment_or_a_file_and_never_shown(tmp_path, monkeypatch):
    monkeypatch.setenv("PLAY_KEY", "s3cret")
    ref = CredentialRef(env="PLAY_KEY")
    assert ref.read() == "s3cret" and "s3cret" not in ref.describe() + repr(ref)
    key = tmp_path / "key.p8"
    key.write_text("-----BEGIN PRIVATE KEY-----")
    assert CredentialRef(file=str(key)).read().startswith("-----BEGIN")


def test_an_unresolvable_reference_names_itself(tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE", raising=False)
    with pytest.raises(CredentialError, match="env NOPE: the variable is not set"):
        CredentialRef(env="NOPE").read()
    with pytest.raises(CredentialError, match=f"file {tmp_path / 'missing.json'}: No such file"):
        CredentialRef(file=str(tmp_path / "missing.json")).read()
    big = tmp_path / "big"
    big.write_bytes(b"x" * 70_000)
    with pytest.raises(CredentialError, match="not a key file"):
        CredentialRef(file=str(big)).read()


def test_retry_after_in_seconds_or_as_a_date():
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert retry_after_s(httpx.Response(429, headers={"Retry-After": "120"})) == 120
    dated = httpx.Response(503, headers={"Retry-After": "Mon, 30 Nov 2026 12:01:30 GMT"})
    assert retry_after_s(dated, now) == 90
    assert retry_after_s(httpx.Response(429, headers={"Retry-After": "soon"})) is None
    assert retry_after_s(httpx.Response(429)) is None


def test_which_failures_are_retryable():
    limited = failure(httpx.Response(429, headers={"Retry-After": "30"}, text="slow down"), "set_rollout")
    assert limited.retryable and limited.retry_after == 30 and "HTTP 429" in str(limited)
    assert failure(httpx.Response(502), "x").retryable
    assert not failure(httpx.Response(403, text="caller lacks permission"), "x").retryable
