"""Loading the YAML configuration, with errors a person can act on.

Every error names the file, the line and the key
(``config/paperboy.yaml:14: subscribers[1].keywordz: unknown key; did you
mean 'keywords'?``). ``${VAR}`` and ``${VAR:-default}`` stand for
environment variables in any string value.

Hostile or broken files are refused in bounded time, each with file and line:
a file over :data:`MAX_BYTES`, a line nested deeper than :data:`MAX_DEPTH`
(flow brackets, indentation, ``- - -``), aliases that would expand the
document past :data:`MAX_EXPANSION` times its size (a "billion laughs"), an
alias that contains itself, and anything else the YAML loader refuses.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml_rs
from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from . import cache
from .base import At
from .schema import Settings

DEFAULT_CONFIG = Path("config/paperboy.yaml")


class ConfigError(Exception):
    """The configuration cannot be used. ``str()`` is the message for the operator."""


MAX_BYTES = 8 << 20  # a configuration of 10,000 subscribers is about 1.5 MB
MAX_DEPTH = 48  # levels of nesting on one line; paperboy's own keys need 5
MAX_EXPANSION = 10  # aliases may repeat values, up to this many times the document's own (+ EXPANSION_SLACK)
EXPANSION_SLACK = 100_000

# What the fast reader might read otherwise than ruamel (which it otherwise matches: YAML 1.2,
# duplicate keys refused): tags, anchors and aliases (each starts a node, after a space, a line's
# start, a flow bracket, a comma or a colon; an anchor or alias has a name), merge keys,
# directives and document markers. A file that has one, or seems to (a comment with "*ever*"),
# is read by ruamel's C-backed loader. A cron line's "* * *" is none of them.
_RUAMEL_ONLY = re.compile(r"""(?:^|[\s\[{,:])(?:!|[&*][^\s,\[\]{}"'])|<<|^(?:---|\.\.\.|%)""", re.MULTILINE)
_SHAPE_CHARS = re.compile(r"""['"#\[\]{}]""")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _position(node: Any, path: tuple[Any, ...]) -> int | None:
    """The 1-based line of ``path`` in the YAML tree (or of its nearest parent)."""
    line = None
    for part in path:
        if isinstance(node, CommentedMap) and part in node:
            line = node.lc.key(part)[0] + 1
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            line = node.lc.item(part)[0] + 1
            node = node[part]
        else:
            break
    return line


def _dotted(path: tuple[Any, ...], tree: Any = None) -> str:
    """``subscribers[2].keywords[0]``; a subscriber is named by address too, when it has one."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        if (
            out.startswith("subscribers[")
            and out.endswith("]")
            and out.count("[") == 1
            and "email" not in path
        ):
            email = _subscriber_email(tree, part)
            if email:
                out += f" ({email})"
    return out or "(top level)"


def _subscriber_email(tree: Any, i: Any) -> str | None:
    try:
        email = tree["subscribers"][i]["email"]
    except (TypeError, KeyError, IndexError):
        return None
    return email if isinstance(email, str) else None


def _expand(node: Any, path: tuple[Any, ...], errors: list[tuple[tuple[Any, ...], str]]) -> Any:
    """Replace ``${VAR}`` in every string of the tree, in place."""

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name)
        if value is None:
            if default is None:
                errors.append((path, f"environment variable {name} is not set"))
                return ""
            return default
        return value

    if isinstance(node, dict):
        for key in list(node):
            node[key] = _expand(node[key], (*path, key), errors)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            node[i] = _expand(item, (*path, i), errors)
    elif isinstance(node, str):
        return _ENV.sub(sub, node)
    return node


def _hint(model: type[BaseModel], path: tuple[Any, ...], key: str) -> str:
    """'did you mean ...' for an unknown key, from the model that refused it."""
    for part in path:
        if isinstance(part, int):
            continue
        field = next((f for name, f in model.model_fields.items() if (f.alias or name) == part), None)
        annotation = getattr(field, "annotation", None)
        inner = getattr(annotation, "__args__", (annotation,))
        nested = next((t for t in inner if isinstance(t, type) and issubclass(t, BaseModel)), None)
        if nested is None:
            return ""
        model = nested
    names = [f.alias or n for n, f in model.model_fields.items()]
    close = difflib.get_close_matches(key, names, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; known keys here: {', '.join(names)}"


def _check_shape(text: str, source: str) -> None:
    """Refuse, before the YAML parser (which recurses) sees it, text nested too deep."""
    if len(text) > MAX_BYTES:
        raise ConfigError(f"{source}:1: the file is {len(text):,} characters; at most {MAX_BYTES:,}")
    flow = 0
    for number, line in enumerate(text.splitlines(), 1):
        body = line.lstrip(" ")
        dashes = 0
        while body.startswith(("- ", "? ")):  # a sequence (or key) nested on one line
            body = body[2:].lstrip(" ")
            dashes += 1
        quote = ""
        deepest = flow
        for found in _SHAPE_CHARS.finditer(body):  # the few characters that matter, not every one
            ch = found.group()
            if quote:
                quote = "" if ch == quote else quote
            elif ch in "'\"":
                quote = ch
            elif ch == "#":
                break
            elif ch in "[{":
                flow += 1
                deepest = max(deepest, flow)
            elif ch in "]}":
                flow = max(0, flow - 1)
        depth = (len(line) - len(line.lstrip(" "))) // 2 + dashes + deepest
        if depth > MAX_DEPTH:
            raise ConfigError(f"{source}:{number}: nested {depth} levels deep; at most {MAX_DEPTH}")


def _check_aliases(tree: dict[Any, Any], source: str) -> None:
    """Refuse aliases that multiply the document (each alias is expanded wherever it is used,
    by the checks below and by validation) or that contain themselves."""
    sizes: dict[int, int] = {}
    distinct = 0

    def size(node: Any, path: frozenset[int]) -> int:
        nonlocal distinct
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in path:
            raise ValueError("an alias that contains itself")
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            return 1
        distinct += 1
        inner = path | {key}
        total = 1 + sum(size(child, inner) for child in children)
        sizes[key] = total
        return total

    expanded = 0
    for name in list(tree):
        line = _position(tree, (name,)) or 1
        try:
            expanded += size(tree[name], frozenset())
        except ValueError as exc:
            raise ConfigError(f"{source}:{line}: {name}: {exc}") from None
        except RecursionError:
            raise ConfigError(
                f"{source}:{line}: {name}: aliases nest it deeper than paperboy follows"
            ) from None
        if expanded > MAX_EXPANSION * distinct + EXPANSION_SLACK:
            raise ConfigError(
                f"{source}:{line}: {name}: its aliases expand the configuration to {expanded:,} values "
                f"(the file holds {distinct:,} collections); an alias may repeat a value, not multiply it"
            )


def parse_settings(text: str, *, source: str, base: Path | None) -> Settings:
    """Validate configuration ``text``; ``source`` names it in messages.

    A valid file is read by yaml-rs (Rust; 0.06 s for 10,000 subscribers), or, when it uses
    anchors, tags or merge keys, by ruamel's C-backed safe loader (0.8 s); both read YAML 1.2
    and keep no positions. A file that fails anywhere is read again by ruamel's round-trip
    loader (4.3 s), which keeps every line for the messages."""
    _check_shape(text, source)  # first: every reader recurses (yaml-rs dies at 20,000 levels)
    try:
        fast = _load_fast(text)
    except Exception:  # said below, with its line
        pass
    else:
        try:
            return _validated(fast, text, source, base)
        except ConfigError:
            pass  # said below, with its line
    try:
        tree = YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError(f"{where}: not valid YAML: {exc.problem}") from None
    except YAMLError as exc:
        raise ConfigError(f"{source}:1: not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source}:1: not valid YAML: nested deeper than paperboy follows") from None
    return _validated(tree, text, source, base)


def _load_fast(text: str) -> Any:
    """The document in ``text``, without positions."""
    if _RUAMEL_ONLY.search(text) is None:
        return yaml_rs.loads(text)
    return YAML(typ="safe", pure=False).load(text)


def _validated(tree: Any, text: str, source: str, base: Path | None) -> Settings:
    """The settings in a loaded document; ConfigError naming the lines (when ``tree`` keeps them)."""
    if tree is None:
        tree = CommentedMap()
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}:1: the configuration must be a mapping of keys")
    if "&" in text:  # without an anchor, no alias
        _check_aliases(tree, source)
    env_errors: list[tuple[tuple[Any, ...], str]] = []
    if "${" in text:
        _expand(tree, (), env_errors)
    if env_errors:
        raise ConfigError(
            "\n".join(f"{source}:{_position(tree, p) or 1}: {_dotted(p)}: {msg}" for p, msg in env_errors)
        )
    try:
        return Settings.model_validate(tree, context={"base": base})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = err["loc"]
            located = (err.get("ctx") or {}).get("error")
            if isinstance(located, At):  # the validator named a key deeper than its own
                loc = located.loc
            line = _position(tree, loc) or 1
            if err["type"] == "extra_forbidden":
                msg = "unknown key" + _hint(Settings, loc[:-1], str(loc[-1]))
            elif err["type"] == "missing":
                msg = "required key is missing"
            else:
                msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{source}:{line}: {_dotted(loc, tree)}: {msg}")
        raise ConfigError("\n".join(lines)) from None


def load_settings(path: Path) -> Settings:
    """Read and validate the configuration file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such configuration file; start from config/paperboy.yaml "
            "in the paperboy repository, or pass --config"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc}") from None
    base = path.resolve().parent
    name = cache.key(text, str(path), base)  # a big file, unchanged since: kept validated
    kept = cache.get(name) if name else None
    if isinstance(kept, Settings):
        return kept
    settings = parse_settings(text, source=str(path), base=base)
    if name:
        settings.rules_digest, settings.feed_digests  # noqa: B018  (made now, kept with them)
        cache.put(name, settings)
    return settings


def lines_of(path: Path, keys: list[tuple[Any, ...]]) -> list[int | None]:
    """The line of each of ``keys`` (``("subscribers", 3, "like", 0)``) in the configuration
    file at ``path``, for a warning about a value that is valid but names nothing."""
    try:
        tree = YAML(typ="rt").load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, YAMLError):
        return [None] * len(keys)
    return [_position(tree, key) for key in keys]
