"""YAML with line numbers: the loader behind every config file and ``--set`` value.

Loading uses ``yaml.safe_load`` semantics (plus YAML 1.2 floats such as ``1e-3``,
which YAML 1.1 reads as strings), refuses duplicate keys, and records the line of every
key and item, so each config problem can be reported at ``file:line``.

Bounded: aliases (``*name`` of an ``&name`` anchor, also in ``<<:`` merges) may repeat at
most :data:`ALIAS_BUDGET` values in all, counted while the document is composed and before
anything is built, so an alias bomb ("billion laughs") is refused at the alias that crosses
the budget within milliseconds; an alias inside the node it names is refused too. Text must
be valid Unicode: a lone surrogate (``"\\udc80"``) cannot be written to ``config.yaml``, a
checkpoint or JSON, so it is refused where it is written.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from cnncli.errors import ConfigError, Problem, shown

#: Values (scalars, lists, mappings) that all the aliases of one document may repeat, in all:
#: far more than any config needs (a whole config holds a few hundred), far less than an
#: alias bomb (nine levels of nine aliases repeat 387,420,489).
ALIAS_BUDGET = 10_000


class LineDict(dict):
    """A mapping that remembers the 1-based line of each key (``lines``) and of itself (``line``)."""

    line: int | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lines: dict[Any, int] = {}


class LineList(list):
    """A sequence that remembers the 1-based line of each item (``lines``)."""

    line: int | None = None

    def __init__(self, *args):
        super().__init__(*args)
        self.lines: list[int] = []


class _Loader(yaml.SafeLoader):
    """SafeLoader that builds LineDict/LineList, refuses duplicate keys, lone surrogates,
    recursive aliases and aliases that repeat more than :data:`ALIAS_BUDGET` values."""

    def __init__(self, stream):
        super().__init__(stream)
        self._sizes: dict[int, int] = {}      # id(node) -> values in it, aliases expanded
        self._open: set[str] = set()          # anchors of the collections being composed
        self._repeated = 0                    # values the aliases so far repeat

    def _size(self, node) -> int:
        """Values in ``node`` with its aliases expanded (memoized: linear in the nodes written)."""
        size = self._sizes.get(id(node))
        if size is None:
            children = node.value if isinstance(node, yaml.SequenceNode) else \
                [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else []
            size = self._sizes[id(node)] = 1 + sum(self._size(n) for n in children)
        return size

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) and event.anchor in self.anchors:
            if event.anchor in self._open:
                raise yaml.composer.ComposerError(
                    None, None, f"alias *{event.anchor} is inside the node it names (a loop); "
                    "a config cannot hold itself", event.start_mark)
            self._repeated += self._size(self.anchors[event.anchor])
            if self._repeated > ALIAS_BUDGET:
                raise yaml.composer.ComposerError(
                    None, None, f"aliases repeat more than {ALIAS_BUDGET:,} values by alias *{event.anchor} "
                    f"(an alias bomb?); a config needs a few hundred. Write the values out or use "
                    "fewer aliases", event.start_mark)
            return super().compose_node(parent, index)
        anchor = getattr(event, "anchor", None)
        if anchor is not None and isinstance(event, yaml.CollectionStartEvent):
            self._open.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._open.discard(anchor)

    def construct_object(self, node, deep=False):
        # PyYAML's scalar constructors raise bare ValueError/KeyError/... on values such as
        # `!!int abc`, `!!bool maybe` or the impossible date `2020-02-30`; locate them instead.
        try:
            value = super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, AttributeError, KeyError, IndexError, OverflowError) as e:
            tag = str(node.tag).rsplit(":", 1)[-1]
            value = node.value if isinstance(node, yaml.ScalarNode) else None
            what = f"cannot read {value!r} as {tag}" if value is not None else f"cannot build a {tag} here"
            detail = f" ({e})" if str(e) and not isinstance(e, (KeyError, IndexError, AttributeError)) else ""
            raise yaml.constructor.ConstructorError(
                None, None, f"{what}{detail}. Quote the value to keep it as text, or fix it", node.start_mark) from None
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                raise yaml.constructor.ConstructorError(
                    None, None, f"text {shown(value)} holds {value[e.start]!r} at position {e.start}, a lone "
                    "surrogate that is not a character (a file name's undecodable byte?): it cannot be "
                    "written to config.yaml, a checkpoint or JSON. Use valid UTF-8 text", node.start_mark) from None
        return value


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    d = LineDict()
    d.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise yaml.constructor.ConstructorError(None, None, "a key must be a plain value",
                                                    key_node.start_mark)
        if key in d:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}' (first on line {d.lines[key]})", key_node.start_mark)
        d[key] = loader.construct_object(value_node, deep=True)
        d.lines[key] = key_node.start_mark.line + 1
    return d


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(n, deep=True) for n in node.value)
    out.lines = [n.start_mark.line + 1 for n in node.value]
    out.line = node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)
# YAML 1.2 floats: 1e-3, 5E+4 (PyYAML's 1.1 resolver needs a dot and reads these as strings)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def parse_yaml(text: str, source: str | None = None) -> Any:
    """Parse YAML text with line tracking.

    Raises:
        ConfigError: On a syntax error, with line and column.
    """
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        col = f", column {mark.column + 1}" if mark else ""
        what = e.problem or str(e)
        if e.context:
            what = f"{e.context}: {what}" if e.problem else e.context
        kind = "YAML syntax error" if isinstance(e, (yaml.scanner.ScannerError, yaml.parser.ParserError)) \
            else "YAML error"
        raise ConfigError([Problem("", f"{kind}{col}: {what}", line)], source) from None
    except yaml.reader.ReaderError as e:   # a control character, e.g. a NUL byte
        line = text.count("\n", 0, e.position) + 1 if isinstance(e.position, int) else None
        col = e.position - (text.rfind("\n", 0, e.position) + 1) + 1 if isinstance(e.position, int) else None
        char = f"#x{e.character:04x}" if isinstance(e.character, int) else repr(e.character)
        raise ConfigError([Problem("", f"YAML error, column {col}: character {char} is not allowed in YAML "
                                   f"({e.reason})", line)], source) from None
    except yaml.YAMLError as e:
        raise ConfigError([Problem("", f"YAML error: {e}")], source) from None
    except RecursionError:
        raise ConfigError([Problem("", "YAML nested too deeply (thousands of levels of [ or {); "
                                   "a config needs a few")], source) from None


def plain(value: Any) -> Any:
    """``value`` with every LineDict/LineList (and tuple) turned into a plain dict/list, so
    ``yaml.safe_dump`` and ``json.dumps`` can write it."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def line_of(container: Any, key: Any) -> int | None:
    """The YAML line of ``container[key]`` (a LineDict key or LineList item), else the
    container's own line, else None (not from a file)."""
    lines = getattr(container, "lines", None)
    if isinstance(lines, dict):
        return lines.get(key, getattr(container, "line", None))
    if isinstance(lines, list) and isinstance(key, int) and key < len(lines):
        return lines[key]
    return getattr(container, "line", None)
