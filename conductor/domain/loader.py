"""Read pipeline YAML into `Pipeline` objects, reporting every problem with file, line and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from conductor.domain.definition import Pipeline, cross_check
from conductor.domain.errors import DefinitionError, DefinitionProblem, NotFound

ANCHORS_REFUSED = "YAML anchors/aliases are not allowed in definitions"

# Deepest nesting a definition may use. Real ones nest five levels (transitions, a transition,
# actions, an action, a parameter); the cap keeps every recursive step after parsing (composer,
# line index, constructor, pydantic, json) far from Python's recursion limit, which a few hundred
# `[` would otherwise reach with a RecursionError.
MAX_DEPTH = 32

# Integers are counts, bounds and seconds; 64 bits hold all of them and every database column.
# Longer literals are refused before conversion: int() of a long sexagesimal ('1:2:3:...') is
# quadratic, of a long decimal a ValueError about sys.set_int_max_str_digits.
_INT_LIMIT = 2**63
_INT_MAX_CHARS = 100


class _Refused(yaml.YAMLError):  # type: ignore[misc]  # PyYAML has no type hints (no types-PyYAML here): its classes are Any
    """A definition uses YAML that definitions may not use; knows the line and key path."""

    def __init__(self, message: str, mark: yaml.Mark | None, path: tuple[Any, ...]):
        super().__init__(message)
        self.message, self.mark, self.path = message, mark, path


def _short(text: str, limit: int = 40) -> str:
    """A scalar from the definition, quoted and cut short so a huge one cannot flood an error."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


class _DefinitionLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML has no type hints: SafeLoader is Any
    """PyYAML's safe loader, refusing what definitions do not need while it composes the document.

    Anchors and aliases: an alias makes the document a graph, and ten lines of `&a [*b, *b, ...]`
    describe billions of nodes (the "billion laughs") that anything walking or constructing the
    document then expands. The first anchor or alias event is refused before a single node refers
    to another, so what the composer returns is a tree no bigger than the text.
    Nesting deeper than MAX_DEPTH, and keys that are lists or mappings, are refused as well, and
    a scalar its constructor cannot convert ('2020-13-45', '!!int abc', an integer beyond 64 bits)
    is refused with its own line instead of escaping as a ValueError or OverflowError.
    """

    def __init__(self, text: str):
        super().__init__(text)
        # Key path of the node being composed, for the error message; None marks a mapping key
        # (a key is not part of the path of the node it names). Its length is the nesting depth.
        self._path: list[Any] = []
        # id(node) -> key path, filled by `_line_index` before construction, for constructor errors.
        self.node_paths: dict[int, tuple[Any, ...]] = {}

    def _here(self) -> tuple[Any, ...]:
        return tuple(p for p in self._path if p is not None)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        # `index` is what PyYAML passes to its resolver: the position in a sequence, the key node
        # of a mapping value, or None for a mapping key and for the root.
        if isinstance(index, yaml.ScalarNode):
            step: Any = index.value
        elif isinstance(index, int):
            step = index
        else:
            step = None
        self._path.append(step)
        try:
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
                raise _Refused(ANCHORS_REFUSED, event.start_mark, self._here())
            if len(self._path) > MAX_DEPTH:
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels", event.start_mark, self._here())
            if isinstance(parent, yaml.MappingNode) and index is None and not isinstance(event, yaml.ScalarEvent):
                raise _Refused("a key must be a plain value, not a list or mapping", event.start_mark, self._here())
            return super().compose_node(parent, index)
        finally:
            self._path.pop()

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # Called for every node, innermost first, so the node named is the one that failed.
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:
            what = _short(node.value) if isinstance(node, yaml.ScalarNode) else "value"
            raise _Refused(f"cannot read {what}: {exc}", node.start_mark, self.node_paths.get(id(node), ())) from None

    def construct_bounded_int(self, node: yaml.ScalarNode) -> int:
        if len(node.value) > _INT_MAX_CHARS:
            raise ValueError(f"integers must fit in 64 bits; this one has {len(node.value)} characters")
        value: int = super().construct_yaml_int(node)  # the int tag constructs an int
        if not -_INT_LIMIT <= value < _INT_LIMIT:
            raise ValueError("integers must fit in 64 bits")
        return value


_DefinitionLoader.add_constructor("tag:yaml.org,2002:int", _DefinitionLoader.construct_bounded_int)


def _refuse_tag(tag: str) -> Any:
    def construct(loader: _DefinitionLoader, node: yaml.Node) -> Any:
        raise ValueError(f"the !!{tag} tag is not allowed in definitions")

    return construct


# Types JSON cannot hold: a definition is pinned to its releases as JSON under its content hash,
# and bytes made that hash raise at release start while a set hashes in a different order in
# each process. Dates stay allowed; they are written as ISO text.
for _tag in ("binary", "set", "omap", "pairs"):
    _DefinitionLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse_tag(_tag))


def _line_index(
    node: yaml.Node,
    path: tuple[Any, ...] = (),
    out: dict[tuple[Any, ...], int] | None = None,
    node_paths: dict[int, tuple[Any, ...]] | None = None,
) -> dict[tuple[Any, ...], int]:
    """Map each key path of a composed YAML document to its 1-based line.

    Hand-written because PyYAML keeps positions only on nodes and pydantic knows only paths;
    this walk joins the two so an error at ('transitions', 2, 'to') points at its line.
    It visits each node once and recurses at most MAX_DEPTH deep: `_DefinitionLoader` refuses
    aliases, deeper nesting and keys that are not scalars, so the document is a shallow tree
    whose keys are strings. If given, `node_paths` receives id(node) -> path of every node.
    """
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if node_paths is not None:
        node_paths[id(node)] = path
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            k = key.value
            out[path + (k,)] = key.start_mark.line + 1
            if node_paths is not None:
                node_paths[id(key)] = path + (k,)
            _line_index(value, path + (k,), out, node_paths)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[path + (i,)] = item.start_mark.line + 1
            _line_index(item, path + (i,), out, node_paths)
    return out


def _line_for(index: dict[tuple[Any, ...], int], path: tuple[Any, ...]) -> int | None:
    # pydantic's loc may hold alias names or union tags the YAML does not; fall back to the
    # longest prefix that does exist.
    for end in range(len(path), -1, -1):
        if path[:end] in index:
            return index[path[:end]]
    return None


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # Discriminated unions add the tag ('threshold') to the loc, and a bad mapping key adds
    # '[key]'; neither is a YAML key.
    return tuple(p for p in loc if p not in ("threshold", "count", "signoff", "compare", "[key]"))


def load_yaml_with_lines(text: str, filename: str = "<string>") -> tuple[Any, dict[tuple[Any, ...], int]]:
    """A YAML document (no anchors, aliases, tags or deep nesting) and the line of every key path
    in it; DefinitionError naming the file and line when it is not YAML or not allowed."""
    # One pass over the text: compose it into nodes (refusing anchors, aliases, deep nesting),
    # map every key path to its line, then build the raw mapping from those same nodes.
    index: dict[tuple[Any, ...], int] = {}
    try:
        loader = _DefinitionLoader(text)  # already refuses non-printable characters
        try:
            node = loader.get_single_node()
            if node is not None:
                index = _line_index(node, node_paths=loader.node_paths)
            raw = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except _Refused as exc:
        line = exc.mark.line + 1 if exc.mark else None
        field = ".".join(map(str, exc.path)) or "<yaml>"
        raise DefinitionError([DefinitionProblem(filename, line, field, exc.message)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise DefinitionError([DefinitionProblem(filename, line, "<yaml>", f"YAML syntax error: {problem}")]) from None
    return raw, index


def problems_of(
    exc: ValidationError, filename: str, index: dict[tuple[Any, ...], int], tags: tuple[str, ...] = ()
) -> list[DefinitionProblem]:
    """pydantic's errors as file:line: field: message problems (`tags`: union tags to leave out of paths)."""
    out = []
    for err in exc.errors():
        loc = tuple(p for p in _clean_loc(tuple(err["loc"])) if p not in tags)
        msg = err["msg"].removeprefix("Value error, ")
        out.append(DefinitionProblem(filename, _line_for(index, loc), ".".join(map(str, loc)) or "<root>", msg))
    return out


def parse_pipeline(text: str, filename: str = "<string>") -> Pipeline:
    """Parse and validate one definition; DefinitionError lists every problem with its line."""
    raw, index = load_yaml_with_lines(text, filename)
    if not isinstance(raw, dict):
        raise DefinitionError([DefinitionProblem(filename, 1, "<root>", "expected a mapping with name, stages and transitions")])
    problems: list[DefinitionProblem] = []
    pipeline: Pipeline | None = None
    try:
        pipeline = Pipeline.model_validate(raw)
    except ValidationError as exc:
        problems += problems_of(exc, filename, index)
    for loc, msg in cross_check(raw):
        problems.append(DefinitionProblem(filename, _line_for(index, loc), ".".join(map(str, loc)), msg))
    if problems:
        problems.sort(key=lambda p: (p.line or 0, p.field))
        raise DefinitionError(problems)
    assert pipeline is not None
    return pipeline


def load_pipeline(path: Path | str, shown_as: str | None = None) -> Pipeline:
    """Read a definition file; DefinitionError if it cannot be read or is invalid.

    Problems name the file as `shown_as`, by default the path as given: `conductor validate`
    shows users their own paths, the catalog shows API clients only the file name.
    """
    path = Path(path)
    name = str(path) if shown_as is None else shown_as
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DefinitionError([DefinitionProblem(name, None, "<file>", f"cannot read: {exc.strerror}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.start + 1].hex()
        raise DefinitionError([DefinitionProblem(name, line, "<file>", f"not UTF-8 text: byte 0x{bad} cannot be decoded")]) from None
    return parse_pipeline(text, name)


def definition_files(paths: list[Path]) -> list[Path]:
    """Expand directories to the *.yaml / *.yml files inside them, sorted."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted([*p.glob("*.yaml"), *p.glob("*.yml")]))
        else:
            files.append(p)
    return files


def validate_paths(paths: list[Path]) -> tuple[list[Pipeline], list[DefinitionProblem]]:
    """Validate every file; returns the valid pipelines and all problems of all files."""
    pipelines: list[Pipeline] = []
    problems: list[DefinitionProblem] = []
    names: dict[str, str] = {}
    for f in definition_files(paths):
        try:
            p = load_pipeline(f)
        except DefinitionError as exc:
            problems.extend(exc.problems)
            continue
        if p.name in names:
            problems.append(DefinitionProblem(str(f), 1, "name", f"pipeline name {p.name!r} is also used by {names[p.name]}"))
            continue
        names[p.name] = str(f)
        pipelines.append(p)
    return pipelines, problems


class DefinitionCatalog:
    """The definitions of a directory, by name; each file read on its own and cached by mtime.

    A broken file fails only the lookups that might have wanted it: a name found in a valid file
    is returned whatever else the folder holds. Errors raised here reach API clients, so they
    name files by their name in the folder, never by the server's path to it.
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        # file -> (mtime and size when read, its pipeline or why it could not be read)
        self._cache: dict[Path, tuple[tuple[int, int], Pipeline | DefinitionError]] = {}

    def _read(self, f: Path) -> Pipeline | DefinitionError:
        try:
            st = f.stat()
        except OSError as exc:  # a dangling symlink, or removed since the directory was listed
            return DefinitionError([DefinitionProblem(f.name, None, "<file>", f"cannot read: {exc.strerror}")])
        stamp = (st.st_mtime_ns, st.st_size)
        cached = self._cache.get(f)
        if cached is None or cached[0] != stamp:
            try:
                result: Pipeline | DefinitionError = load_pipeline(f, f.name)
            except DefinitionError as exc:
                result = exc  # remembered too, so a broken file is not parsed on every lookup
            cached = (stamp, result)
            self._cache[f] = cached
        return cached[1]

    def _entries(self) -> list[tuple[Path, Pipeline | DefinitionError]]:
        files = definition_files([self.directory])
        for gone in self._cache.keys() - set(files):
            del self._cache[gone]
        return [(f, self._read(f)) for f in files]

    def get(self, name: str) -> Pipeline:
        broken: list[str] = []
        for f, entry in self._entries():
            if isinstance(entry, DefinitionError):
                broken.append(f.name)
            elif entry.name == name:
                return entry
        message = f"no pipeline definition named {name!r}"
        if broken:
            # The name may be in one of them; say which, by file name (run `conductor validate`).
            message += f"; {len(broken)} definition file(s) could not be read: {', '.join(broken)}"
        raise NotFound(message)

    def names(self) -> list[str]:
        return [entry.name for _, entry in self._entries() if not isinstance(entry, DefinitionError)]


def pipeline_from_json(data: dict[str, Any]) -> Pipeline:
    """Rebuild a pinned definition stored as JSON (by alias) in the database."""
    return Pipeline.model_validate(data)
