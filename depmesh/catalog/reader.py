"""Reading a catalog, teams or failure-mode file: YAML with every mapping's and key's line, duplicate keys named, alias expansion and file size bounded, and the problems a validation collects (each at file:line:node:field)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    node: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "")
        parts = [where]
        if self.node:
            parts.append(f"node {self.node}")
        if self.field:
            parts.append(f"field {self.field}")
        return ": ".join(parts) + ": " + self.message


class CatalogError(ValueError):
    """A catalog that cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        head = f"{len(problems)} problem(s) in catalog" if len(problems) > 1 else "invalid catalog"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in problems))


class _LineDict(dict):
    line: int | None = None
    key_lines: dict[Any, int] | None = None  # each key's own line: errors about a field point at it


class _LineList(list):
    line: int | None = None


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser when present: 10x faster
    problems: list[tuple[int, str]]


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)
    out = _LineDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            loader.problems.append((key_node.start_mark.line + 1, f"duplicate key {key!r}"))
        try:
            out.key_lines.setdefault(key, key_node.start_mark.line + 1)
        except TypeError:  # an unhashable key: YAML allows it, validation names it
            pass
        out[key] = loader.construct_object(value_node, deep=True)
    return out


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> _LineList:
    out = _LineList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


class _Checker:
    """Collects problems for one file while building the spec."""

    def __init__(self, path: Path):
        self.file = path.name
        self.problems: list[Problem] = []
        # module -> (error, line, field and entrypoint of its first use, nodes that use it): reported once,
        # after every node is read, not once per node
        self.missing_modules: dict[str, tuple[str, int | None, str, str, list[str]]] = {}
        self.modules: set[str] = set()  # the modules entrypoints were imported from (the compiled cache watches them)

    def report_missing_modules(self) -> None:
        hint = ("custom code is found on Python's path: run from the folder that holds the package, or set "
                "PYTHONPATH to it (the Dagster code location needs the same)")
        for module, (error, line, field, ref, nodes) in self.missing_modules.items():
            if len(nodes) == 1:
                self.problems.append(Problem(self.file, line, nodes[0], field, f"cannot import {ref!r}: {error}; {hint}"))
            else:
                shown = ", ".join(nodes[:5]) + (" ..." if len(nodes) > 5 else "")
                self.problems.append(Problem(self.file, line, None, None, f"cannot import module {module!r}, used by "
                                             f"{len(nodes)} nodes ({shown}): {error}; {hint}"))

    def add(self, message: str, *, node: str | None = None, field: str | None = None, at: Any = None) -> None:
        """A problem; its line is the field's own when ``at`` is the mapping that holds it, else ``at``'s."""
        line = getattr(at, "line", None)
        lines = getattr(at, "key_lines", None)
        if lines and field:
            line = lines.get(field.rsplit(".", 1)[-1].split("[", 1)[0], line)
        self.problems.append(Problem(self.file, line, node, field, message))

    def keys(self, data: Mapping, allowed: set[str], *, node: str | None, prefix: str) -> None:
        for key in data:
            if key not in allowed:
                hint = ", ".join(sorted(allowed))
                self.add(f"unknown key {key!r} (allowed: {hint})", node=node, field=f"{prefix}{key}", at=data)

    def typed(self, value: Any, kind: type | tuple[type, ...], what: str, *, node: str | None, field: str, at: Any) -> bool:
        # bool is an int subclass in Python; a YAML `true` is never a valid number here.
        ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)))
        if not ok:
            self.add(f"expected {what}, got {type(value).__name__} {value!r}", node=node, field=field, at=at)
        return ok


def _type_name(value: Any) -> str:
    """What a YAML value is, in words (not the loader's class names)."""
    if value is None:
        return "nothing (the file or value is empty)"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return {"str": "a text", "int": "a number", "float": "a number", "bool": "true/false"}.get(
        type(value).__name__, type(value).__name__)


ALIAS_FLOOR = 100_000  # YAML nodes a catalog may expand to through aliases, at least
ALIAS_FACTOR = 10  # ... or this many times the nodes it is written with


def _expanded_size(root: yaml.Node, file: str) -> tuple[int, int]:
    """How many YAML nodes the document holds once every alias is expanded
    (what constructing it, and hashing it, costs), without expanding it; and
    how many it is written with (each node once, however often aliased)."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in in_progress:
            raise CatalogError([Problem(file, node.start_mark.line + 1, None, None,
                                        "a YAML alias refers to itself (a recursive anchor)")])
        in_progress.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        in_progress.discard(key)
        sizes[key] = total
        return total

    return size(root), len(sizes)


def _compose(loader: _Loader, c: _Checker) -> Any:
    """The document, composed and bounded before it is constructed: YAML
    aliases that would expand past the bound (a "billion laughs" catalog) are
    refused here, before anything expands them."""
    root = loader.get_single_node()
    if root is None:
        return None
    expanded, written = _expanded_size(root, c.file)
    bound = max(ALIAS_FLOOR, ALIAS_FACTOR * written)
    if expanded > bound:
        raise CatalogError([Problem(c.file, None, None, None,
                                    f"YAML aliases expand this catalog from {written:,} to {expanded:,} nodes "
                                    f"(at most {bound:,} allowed): write the repeated parts out, or anchor less")])
    return loader.construct_document(root)


def load_yaml(text: str, c: _Checker, error: type[CatalogError] = CatalogError) -> Any:
    """The YAML document in ``text``, with line numbers on its mappings and
    lists; duplicate keys go to ``c``'s problems; not-YAML and expanding
    aliases raise ``error`` naming the file and line. Every depmesh file
    beside the catalog (failure modes, teams) is read through here."""
    loader = _Loader(text)
    loader.problems = []
    try:
        data = _compose(loader, c)
    except CatalogError as exc:  # YAML aliases that would expand past the bound
        raise error(exc.problems) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise error([Problem(c.file, line, None, None, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    finally:
        loader.dispose()
    for line, msg in loader.problems:
        c.problems.append(Problem(c.file, line, None, None, msg))
    return data


MAX_FILE_BYTES = 5_000_000  # a catalog, teams or failure-mode file; larger ones are refused, not read


def read_capped(path: Path, error: type[CatalogError] = CatalogError, what: str = "catalog",
                limit: int = MAX_FILE_BYTES) -> str:
    """A YAML file's text: a regular file of at most ``limit`` bytes, UTF-8; else ``error`` naming it
    (``/dev/zero``, a FIFO or a 2 GB file are refused before they are read)."""
    import stat as stat_module

    try:
        mode = path.stat().st_mode
        if not stat_module.S_ISREG(mode):
            raise error([Problem(str(path), None, None, None, f"cannot read {what}: not a regular file")])
        with open(path, "rb") as handle:
            raw = handle.read(limit + 1)
    except OSError as exc:
        raise error([Problem(str(path), None, None, None, f"cannot read {what}: {exc.strerror}")]) from None
    if len(raw) > limit:
        raise error([Problem(str(path), None, None, None, f"{what} is larger than {limit:,} bytes: refused")])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error([Problem(path.name, None, None, None, f"not UTF-8 text: {exc}")]) from None
