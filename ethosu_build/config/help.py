"""What each config key means, for `ethosu-build --help` and `ethosu-search --help` (the
`${ethosu.help:}` in conf/hydra/help/) and for errors that name a key.

The meanings are the comments on the schema's fields in schema.py, read from its source: one
place says what a key means, to a reader of the code and of the help alike, and a field
without a comment shows in the help as one (tests/test_help.py requires every field to have
one). Imports nothing heavy: the help must stay fast.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import re
import tokenize
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any

from . import schema

CONF = Path(__file__).resolve().parent.parent / "conf"
COLUMN = 36  # where the meanings start, unless a line is longer
SECTIONS = {"search": schema.SearchConfig}  # top-level sections of other apps (ethosu-search)


@cache
def _comments() -> dict[tuple[str, str], str]:
    """(class, field) -> the comment on the field's line, else the comment lines right above it."""
    source = Path(schema.__file__).read_text()
    lines = source.splitlines()
    comment_at = {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    out = {}
    for cls in ast.parse(source).body:
        if not isinstance(cls, ast.ClassDef):
            continue
        for stmt in cls.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            text = comment_at.get(stmt.end_lineno or stmt.lineno, "")
            if not text:
                above, n = [], stmt.lineno - 1
                while n >= 1 and lines[n - 1].strip().startswith("#"):
                    above.insert(0, comment_at[n])
                    n -= 1
                text = " ".join(above)
            out[(cls.name, stmt.target.id)] = text.replace("  ", " ")
    return out


def meaning(cls: type, name: str) -> str:
    """The comment of field `name` of schema class `cls` (or of the class it inherits it from)."""
    for c in cls.__mro__:
        text = _comments().get((c.__name__, name))
        if text:
            return text
    return ""


def fields(cls: type) -> dict[str, Any]:
    """Field name -> its type, Optional unwrapped."""
    hints = typing.get_type_hints(cls)
    return {f.name: _unwrap(hints[f.name]) for f in dataclasses.fields(cls)}


def _unwrap(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else Any
    return tp


def _entry_class(tp: Any) -> type | None:
    """The dataclass of the values of a dict[str, X] or the items of a list[X] field."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (dict, list) and args and dataclasses.is_dataclass(args[-1]):
        return args[-1]
    return None


def options_setting(group: str, key: str) -> list[str]:
    """The options of a built-in config group whose file sets `key` (e.g. quantization, qat)."""
    import yaml

    found = []
    for path in sorted((CONF / group).glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and data.get(key) is not None:
            found.append(path.stem)
    return found


def render(*, _root_=None) -> str:
    """The composed config (the command line's overrides applied), a key a line with its
    meaning; schema keys the chosen options leave unset as comments, with what sets them.
    `$` doubled: Hydra substitutes the help template with string.Template after this."""
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(_root_, resolve=False) if _root_ is not None else {}
    config.pop("hydra", None)
    rows: list[tuple[int, str, str]] = []
    _walk(config, schema.BuildConfig, 0, rows)
    width = min(COLUMN, max(2 * depth + len(text) for depth, text, _ in rows) + 2)
    out = []
    for depth, text, note in rows:
        line = "  " * depth + text
        out.append(f"{line:<{width}}  # {note}" if note else line)
    return "\n".join(out).replace("$", "$$")


def _walk(node: dict, cls: type | None, depth: int, rows: list, path: str = "") -> None:
    """Rows (depth, text, meaning) of `node`, a config section whose schema is `cls` (None: free
    form, such as a dataset's arguments)."""
    known = fields(cls) if cls is not None else {}
    for key, value in node.items():
        if cls is schema.BuildConfig and key in SECTIONS:
            tp, note = SECTIONS[key], (SECTIONS[key].__doc__ or "").splitlines()[0]
        else:
            tp, note = known.get(key), _note(cls, key, path) if key in known else ""
        entry, where = _entry_class(tp), f"{path}{key}"
        if isinstance(value, dict) and value:
            rows.append((depth, f"{key}:", note))
            if entry is not None:  # named entries (overrides)
                for name, item in value.items():
                    rows.append((depth + 1, f"{name}:", ""))
                    _walk(item if isinstance(item, dict) else {}, entry, depth + 2, rows, f"{where}.*.")
            else:
                _walk(value, tp if dataclasses.is_dataclass(tp) else None, depth + 1, rows, f"{where}.")
            continue
        rows.append((depth, f"{key}: {_flow(value)}", note))
        if entry is not None:  # what an entry holds, when none is given
            each = "<name>." if isinstance(value, dict) else "[i]."
            for name in fields(entry):
                rows.append((depth + 1, f"# {each}{name}", _note(entry, name, f"{where}.*.")))
    for key in known:
        if key not in node and dataclasses.is_dataclass(known[key]):
            group = _group_of(cls) if depth == 1 else ""
            options = options_setting(group, key) if group else []
            by = f" ({group}={', '.join(options)} set it)" if options else ""
            rows.append((depth, f"# {key}: unset{by}", meaning(cls, key)))


def _note(cls: type, key: str, path: str) -> str:
    """The key's meaning, and the values it accepts where the set is closed and short."""
    text = meaning(cls, key)
    values = schema.CHOICES.get(f"{path}{key}") or schema.CHOICES.get(f"{path}{key}.*")
    if values and len(values) <= 6 and not all(str(v) in text for v in values if v is not None):
        text += f" [{' | '.join('null' if v is None else str(v) for v in values)}]"
    return text


def _group_of(cls: type | None) -> str:
    """The top-level key (config group) whose schema is `cls`."""
    return next((k for k, tp in fields(schema.BuildConfig).items() if tp is cls), "")


_PLAIN = re.compile(r"\A(\$\{[^}]*\}|[A-Za-z0-9_./:+-]+)\Z")


def _flow(value: Any) -> str:
    """A value as it is typed on the command line (YAML flow style)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    text = str(value)
    return text if _PLAIN.match(text) and text not in ("null", "true", "false") else repr(text)


def key_meaning(dotted: str) -> str:
    """The meaning of a schema key by its dotted path (quantization.qat), '' if none."""
    cls: Any = schema.BuildConfig
    parts = dotted.split(".")
    for part in parts[:-1]:
        tp = fields(cls).get(part) if dataclasses.is_dataclass(cls) else None
        cls = _entry_class(tp) or tp
    return meaning(cls, parts[-1]) if dataclasses.is_dataclass(cls) and parts[-1] in fields(cls) else ""


def section_example(group: str, key: str, option: str, extra: dict[str, Any]) -> str:
    """`{k: v, ...}` for the section `key` of a group option's file: the values its schema
    class has no such default for, and `extra` (what the user tried to set) over them."""
    import yaml

    cls = fields(fields(schema.BuildConfig)[group])[key]
    data = yaml.safe_load((CONF / group / f"{option}.yaml").read_text()).get(key) or {}
    defaults = {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        for f in dataclasses.fields(cls)
    }
    section = {k: v for k, v in data.items() if k not in defaults or defaults[k] != v}
    return _flow({**section, **extra})
