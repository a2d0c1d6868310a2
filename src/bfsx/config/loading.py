"""yaml → model, the one path every config takes (trade.yaml, strategy yaml, the simulator's
sim.yaml): a strict YAML reader (duplicate keys refused, times kept as text) and pydantic errors
turned into one line naming the file and the key, with a "did you mean" for a misspelt key.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import annotated_types
import yaml
from pydantic import (
    BaseModel,
    SecretStr,
    ValidationError,
)
from pydantic.fields import FieldInfo

from bfsx.config.base import (
    ConfigError,
    _show,
    _suggest,
)


# ------------------------------------------------------------------------------------ YAML reading
class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and does not read ``13:30`` as the integer 810."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            with contextlib.suppress(TypeError):  # unhashable keys: let PyYAML report them
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key '{key}'", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 reads "4:15" and "13:30" as base-60 integers (255, 810): drop that form so times stay text.
_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _INT,
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping (empty file = ``{}``); every failure is one ConfigError line naming the file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a YAML file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")  # tolerate the BOM some Windows editors write
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = (e.problem or e.context or "invalid YAML").strip()
        if "\\t" in problem or "\t" in problem:
            problem = "tab character (indent with spaces)"
        if problem.startswith("duplicate key"):
            raise ConfigError(_one_line(f"{path}: {problem}{where}")) from None
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: YAML error: {' '.join(str(e).split())}") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise ConfigError(f"{path}: YAML nested too deeply") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of 'key: value' lines, got {type(data).__name__}")
    return data


# ------------------------------------------------------------------- pydantic error → one line
def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """Strip Optional and Annotated: (bare type, constraint metadata)."""
    metadata: list[Any] = []
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            base, *extra = typing.get_args(annotation)
            for item in extra:
                metadata.extend(item.metadata if isinstance(item, FieldInfo) else [item])
            annotation = base
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation, metadata
            annotation = args[0]
        else:
            return annotation, metadata


def _field_at(model: type[BaseModel], loc: Sequence[int | str]) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """Follow an error location through nested models: (model owning the last key, its field)."""
    owner: type[BaseModel] | None = model
    field: FieldInfo | None = None
    for i, part in enumerate(loc):
        if isinstance(part, int):
            continue
        if owner is None or part not in owner.model_fields:
            return (owner if i == len(loc) - 1 else None), None
        field = owner.model_fields[part]
        if i == len(loc) - 1:
            return owner, field
        bare, _ = _unwrap(field.annotation)
        if typing.get_origin(bare) is list:
            bare, _ = _unwrap(typing.get_args(bare)[0])
        owner = bare if inspect.isclass(bare) and issubclass(bare, BaseModel) else None
    return owner, field


def _expectation(field: FieldInfo, item: bool = False) -> str | None:
    bare, meta = _unwrap(field.annotation)
    meta = [*meta, *field.metadata]
    if item and typing.get_origin(bare) is list:  # the error is about one element: describe that
        bare, meta = _unwrap(typing.get_args(bare)[0])
    bounds = []
    for m in meta:
        for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if isinstance(m, getattr(annotated_types, attr.capitalize())):
                bounds.append(f"{sym} {getattr(m, attr)}")
    bound = f" {' and '.join(bounds)}" if bounds else ""
    if bare is bool:
        return "true or false"
    if bare is int:
        return f"an integer{bound}"
    if bare is float:
        # Every config model refuses NaN and infinities (allow_inf_nan=False): say so, since a
        # `.inf` is "a number" to whoever typed it.
        return f"a finite number{bound}"
    if bare in (str, SecretStr):
        return "a string"
    if typing.get_origin(bare) is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(bare)))
    if typing.get_origin(bare) is list:
        return "a list"
    if typing.get_origin(bare) is dict:
        return "a mapping of 'key: value'"
    if inspect.isclass(bare) and issubclass(bare, BaseModel):
        return f"a mapping with keys {', '.join(bare.model_fields)}"
    return None


def _loc_text(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _one_error(model: type[BaseModel], err: Mapping[str, Any]) -> str:
    loc: tuple[int | str, ...] = tuple(err.get("loc", ()))
    kind, value = err.get("type", ""), err.get("input")
    key = _loc_text(loc)
    if kind == "bfsx":
        message = str(err.get("ctx", {}).get("m", err.get("msg", "")))
        return f"'{key}' {message}" if loc else message
    owner, field = _field_at(model, loc)
    if kind == "extra_forbidden":
        known = list(owner.model_fields) if owner is not None else []
        hint = _suggest(str(loc[-1]), known)
        prefix = key[: len(key) - len(str(loc[-1]))]
        return f"unknown key '{key}'" + (f" (did you mean '{prefix}{hint}'?)" if hint else "")
    if kind == "missing":
        return f"'{key}' is required"
    if kind == "value_error" and loc:  # a validator's own words say more than the field's type
        return f"'{key}' {str(err.get('msg', 'invalid')).removeprefix('Value error, ')}"
    if not loc:
        return str(err.get("msg", "invalid"))
    expect = _expectation(field, item=bool(loc) and isinstance(loc[-1], int)) if field is not None else None
    if expect is None:
        expect = str(err.get("msg", "valid")).lower().removeprefix("input should be ").removeprefix("value error, ")
    secret = field is not None and _unwrap(field.annotation)[0] is SecretStr
    return f"'{key}' must be {expect}" + ("" if secret else f", got {_show(value)}")


def one_line_error(path: Path | str, model: type[BaseModel], e: ValidationError) -> ConfigError:
    """The first validation error of ``model`` read from ``path`` as one :class:`ConfigError` line."""
    # A misspelled key usually also shows up as a "missing" one: report the root cause first.
    errors = sorted(e.errors(include_url=False), key=lambda err: err.get("type") != "extra_forbidden")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return ConfigError(_one_line(f"{path}: {_one_error(model, errors[0])}{more}"))


_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}  # what str.splitlines splits on


def _one_line(text: str) -> str:
    """Line breaks in a key or value the user wrote, shown escaped: the error stays one line."""
    return text.translate(_LINE_BREAKS)


M = TypeVar("M", bound=BaseModel)


def load_model(path: Path | None, model: type[M], overrides: Mapping[str, Any] | None = None) -> M:
    """Read ``path`` (None = no file: defaults) and validate it as ``model``; ``overrides`` (from the
    command line) win over the file. Raises :class:`ConfigError` (one line) on any mistake."""
    data = read_yaml(path) if path is not None else {}
    if overrides:
        data = {**data, **overrides}
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise one_line_error(path if path is not None else "config", model, e) from None
