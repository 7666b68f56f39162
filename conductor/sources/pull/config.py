"""A track's pulled sources: one YAML file (or the same JSON through the API), validated with
`file:line: field: message` errors like definitions.

    # conductor track sources music-android --file sources.yaml
    release_name: "com.spotify.music@{version}+{build}"   # how the vendors name a release
    sources:
      - name: sentry                    # default: the kind; unique in the file
        kind: sentry
        organization: spotify
        project: 4504
        token: {env: SENTRY_TOKEN}
        interval: 5m
        signals: {crash_free_sessions: crash_free_sessions}
      - kind: jira
        base_url: https://spotify.atlassian.net
        email: release-robot@spotify.example
        token: {env: JIRA_TOKEN}
        signals: {open_blockers: 'fixVersion = "{version}" AND priority = Blocker AND statusCategory != Done'}

Credentials are references (an environment variable or a file), never values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from conductor.domain.errors import DefinitionError, DefinitionProblem
from conductor.domain.loader import load_yaml_with_lines, problems_of
from conductor.sources.pull.registry import SOURCE_KINDS, SourceConfig, parse_source_config

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,49}")
_PLACEHOLDERS = ("version", "build", "track", "package")


@dataclass(frozen=True)
class NamedSource:
    name: str
    config: SourceConfig


@dataclass(frozen=True)
class TrackSources:
    release_name: str | None
    sources: tuple[NamedSource, ...]

    def signals(self) -> dict[str, str]:
        """Which source produces each pipeline signal (signal -> source name)."""
        return {signal: s.name for s in self.sources for signal in s.config.signals}

    def as_settings(self) -> dict[str, Any]:
        """What Track.settings keeps (credentials stay references)."""
        return {
            "release_name": self.release_name,
            "sources": [{"name": s.name, **s.config.model_dump(mode="json", exclude_defaults=True), "kind": s.config.kind}
                        for s in self.sources],
        }  # fmt: skip


def parse_sources(raw: Any, filename: str = "<sources>", index: dict[tuple[Any, ...], int] | None = None) -> TrackSources:
    """Validate a track's sources mapping; DefinitionError listing every problem with its line."""
    index = index or {}
    problems: list[DefinitionProblem] = []

    def problem(path: tuple[Any, ...], message: str) -> None:
        line = next((index[path[:end]] for end in range(len(path), -1, -1) if path[:end] in index), None)
        problems.append(DefinitionProblem(filename, line, ".".join(map(str, path)) or "<root>", message))

    if not isinstance(raw, dict):
        raise DefinitionError([DefinitionProblem(filename, 1, "<root>", "expected a mapping with release_name and sources")])
    for key in set(raw) - {"release_name", "sources"}:
        problem((key,), "unknown key; use release_name and sources")
    release_name = raw.get("release_name")
    if release_name is not None and not _template_ok(release_name):
        problem(
            ("release_name",), f"a text with {{{'}, {'.join(_PLACEHOLDERS)}}} placeholders only, e.g. 'com.acme.app@{{version}}+{{build}}'"
        )
    items = raw.get("sources")
    if not isinstance(items, list) or not items:
        problem(("sources",), "a list of at least one source")
        items = []
    named: list[NamedSource] = []
    for i, item in enumerate(items):
        source = _one(item, i, filename, index, problem, {n.name for n in named})
        if source is not None:
            named.append(source)
    if problems:
        raise DefinitionError(sorted(problems, key=lambda p: (p.line or 0, p.field)))
    return TrackSources(release_name, tuple(named))


def _one(item: Any, i: int, filename: str, index: dict[tuple[Any, ...], int], problem: Any, taken: set[str]) -> NamedSource | None:
    if not isinstance(item, dict):
        problem(("sources", i), f"a mapping with a kind ({', '.join(SOURCE_KINDS)}) and its settings")
        return None
    body = dict(item)
    name = body.pop("name", body.get("kind"))
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        problem(("sources", i, "name"), "a name of lower-case letters, digits, _ or - (at most 50)")
        return None
    if name in taken:
        problem(("sources", i, "name"), f"another source is named {name!r}; give each a name of its own")
        return None
    try:
        config = parse_source_config(body)
    except ValidationError as exc:
        shifted = {k[2:]: v for k, v in index.items() if k[:2] == ("sources", i)}
        for p in problems_of(exc, filename, shifted, tags=SOURCE_KINDS):
            problem(("sources", i, *p.field.split(".")) if p.field != "<root>" else ("sources", i), p.message)
        return None
    return NamedSource(name, config)


def _template_ok(text: Any) -> bool:
    if not isinstance(text, str) or not text or len(text) > 300:
        return False
    return all(p in _PLACEHOLDERS for p in re.findall(r"{([^{}]*)}", text))


def load_sources(text: str, filename: str) -> TrackSources:
    """A sources file's text, validated (DefinitionError with file:line: field: message)."""
    raw, index = load_yaml_with_lines(text, filename)
    return parse_sources(raw, filename, index)
