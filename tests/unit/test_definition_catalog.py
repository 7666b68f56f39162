"""DefinitionCatalog: one broken file in the definitions folder fails only the lookups that need it,
and no error it raises shows the server's directory."""

import os
import shutil
from pathlib import Path

import pytest

from conductor.domain.errors import ConductorError, DefinitionError, NotFound
from conductor.domain.loader import DefinitionCatalog

DEFS = Path(__file__).resolve().parents[2] / "state_definitions"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    shutil.copy(DEFS / "mobile_weekly.yaml", tmp_path / "mobile_weekly.yaml")
    (tmp_path / "broken-name.yaml").write_text("name: broken-name\nstages: {a: {}\n")
    return tmp_path


def test_a_broken_file_does_not_block_a_valid_definition(folder):
    catalog = DefinitionCatalog(folder)
    assert catalog.get("mobile_weekly").name == "mobile_weekly"
    assert catalog.names() == ["mobile_weekly"]


@pytest.mark.parametrize("name", ["broken-name", "missing"])
def test_lookups_that_miss_name_the_broken_file_but_not_the_directory(folder, name):
    with pytest.raises(NotFound) as exc:
        DefinitionCatalog(folder).get(name)
    message = str(exc.value)
    assert f"no pipeline definition named {name!r}" in message
    assert "1 definition file(s) could not be read: broken-name.yaml" in message
    assert str(folder) not in message


def test_a_miss_in_a_clean_folder_does_not_name_the_directory(tmp_path):
    shutil.copy(DEFS / "mobile_weekly.yaml", tmp_path / "mobile_weekly.yaml")
    with pytest.raises(NotFound) as exc:
        DefinitionCatalog(tmp_path).get("missing")
    assert str(exc.value) == "no pipeline definition named 'missing'"


def test_files_are_reread_when_they_change(folder):
    catalog = DefinitionCatalog(folder)
    with pytest.raises(NotFound):
        catalog.get("broken-name")
    fixed = (DEFS / "mobile_weekly.yaml").read_text().replace("name: mobile_weekly", "name: broken-name")
    (folder / "broken-name.yaml").write_text(fixed)
    st = (folder / "broken-name.yaml").stat()
    os.utime(folder / "broken-name.yaml", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert catalog.get("broken-name").name == "broken-name"
    assert sorted(catalog.names()) == ["broken-name", "mobile_weekly"]


def test_broken_files_are_parsed_once_per_change(folder, monkeypatch):
    from conductor.domain import loader

    calls = []
    real = loader.parse_pipeline
    monkeypatch.setattr(loader, "parse_pipeline", lambda text, filename: calls.append(filename) or real(text, filename))
    catalog = DefinitionCatalog(folder)
    for _ in range(3):
        catalog.get("mobile_weekly")
        with pytest.raises(NotFound):
            catalog.get("missing")
    assert sorted(calls) == ["broken-name.yaml", "mobile_weekly.yaml"]


def test_unreadable_entries_are_reported_by_name(folder):
    (folder / "dangling.yaml").symlink_to(folder / "gone.yaml")
    catalog = DefinitionCatalog(folder)
    assert catalog.get("mobile_weekly").name == "mobile_weekly"
    with pytest.raises(NotFound) as exc:
        catalog.get("missing")
    assert "2 definition file(s) could not be read: broken-name.yaml, dangling.yaml" in str(exc.value)
    assert str(folder) not in str(exc.value)


def test_catalog_errors_never_show_the_directory(folder):
    # Whatever the catalog raises goes to API clients; it names files, not server paths.
    (folder / "bomb.yaml").write_text("name: bomb\na: &a [x, x]\nb: [*a, *a]\n")
    catalog = DefinitionCatalog(folder)
    for name in ("mobile_weekly", "bomb", "broken-name", "missing"):
        try:
            catalog.get(name)
        except ConductorError as exc:
            assert not isinstance(exc, DefinitionError) or exc.problems
            assert str(folder) not in str(exc)
