"""Typed loading of nested dataclasses from plain dicts (YAML) with `key=value` overrides.

Every value is checked against the dataclass field's annotation before any work
starts: an unknown key or a value of the wrong type is a :class:`ConfigError`
naming the dotted key (``train.optim.lr``) and the expected type.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from gkl.settings._variants import is_union, select_variant
from gkl.utils.errors import ConfigError

T = TypeVar("T")
_SCIENTIFIC = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp`` and return it converted (int → float, list → tuple)."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"config key '{key}': got {value!r}, expected one of {_type_name(tp)}")
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"config key '{key}': null is not allowed, expected {_type_name(tp)}")
        options = [arg for arg in args if arg is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own error is the informative one
            return _convert(value, options[0], key)
        for arg in options:
            try:
                return _convert(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}': got {value!r}, expected {_type_name(tp)}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping for section {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': got {value!r}, expected a list ({_type_name(tp)})")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"config key '{key}': expected {len(args)} items, got {len(value)}")
            items = [_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_tp = args[0] if args else Any
            items = [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': got {value!r}, expected a mapping")
        _, val_tp = typing.get_args(tp) or (str, Any)
        return {str(k): _convert(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, str) and _SCIENTIFIC.match(value.strip()):
            value = float(value)  # PyYAML reads 5e-4 and 1.0e38 (YAML 1.1) as strings
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': got {value!r}, expected a number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}': got {value!r}, expected an integer")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': got {value!r}, expected true or false")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': got {value!r}, expected a string")
        return value
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"config key '{key}': got {value!r}, expected {_type_name(tp)}")


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints(cls)``, resolved once per class (the schema's classes never change)."""
    return typing.get_type_hints(cls)


def _dataclass_fields(cls: type) -> tuple[dataclasses.Field[Any], ...]:
    """``dataclasses.fields(cls)``; TypeError (a bug: the schema holds dataclasses only) otherwise."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"must be called with a dataclass type or instance, got {cls!r}")
    return dataclasses.fields(cls)


def from_dict(cls: type[T], data: dict[str, Any], *, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, validating every key and type recursively.

    A tagged union (:mod:`gkl.settings._variants`) builds the class its tags in ``data`` name.
    """
    if is_union(cls):  # one class per method
        cls = select_variant(cls, data, prefix)
    hints = _type_hints(typing.cast(type, cls))
    fields = {f.name: f for f in _dataclass_fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean '{prefix + '.' if prefix else ''}{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{dotted}'{hint} (valid keys: {', '.join(sorted(fields))})")
        kwargs[key] = _convert(value, hints[key], dotted)
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        names = ", ".join(f"'{prefix + '.' if prefix else ''}{m}'" for m in missing)
        raise ConfigError(f"missing required config key(s) {names}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        where = f"section '{prefix}'" if prefix else "config"
        raise ConfigError(f"{where}: {err}") from err


def to_dict(obj: Any) -> Any:
    """The plain (YAML-serialisable) form of a config dataclass."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


class ConfigLoader(yaml.SafeLoader):
    """YAML loader for configs: only ``true``/``false`` are booleans, and duplicate keys are errors.

    PyYAML follows YAML 1.1, where ``yes``/``no``/``on``/``off`` are booleans, so
    ``train.amp: off`` would read as ``False``; here they stay strings (as in YAML 1.2).
    A key given twice in one mapping would silently drop the first block; here it is a
    :class:`ConfigError` naming the key and its line.
    """


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _construct_mapping_unique(loader: ConfigLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            first = seen.get(key)
            seen.setdefault(key, line)
        except TypeError:  # an unhashable key: let PyYAML report it
            continue
        if first is not None:
            where = key_node.start_mark.name
            raise ConfigError(
                f"{where}:{line}: duplicate key {key!r} (first given on line {first}); "
                "a repeated key would silently replace the first block, so it is an error"
            )
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


ConfigLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_unique)


class _FastConfigLoader(getattr(yaml, "CSafeLoader", ConfigLoader)):  # type: ignore[misc]
    """:class:`ConfigLoader`'s resolvers and constructors over libyaml's parser (PyYAML's C extension, about
    eight times faster); a document it refuses is parsed again by :class:`ConfigLoader` for the error."""


_FastConfigLoader.yaml_implicit_resolvers = ConfigLoader.yaml_implicit_resolvers
_FastConfigLoader.yaml_constructors = dict(ConfigLoader.yaml_constructors)


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML ``text`` with :class:`ConfigLoader`; errors are a :class:`ConfigError` naming ``source:line``."""
    fast = _FastConfigLoader(text)
    try:
        return fast.get_single_data()
    except (yaml.YAMLError, ConfigError):
        pass  # the pure-Python parser names the place as before
    finally:
        fast.dispose()
    loader = ConfigLoader(text)
    loader.name = source
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        problem = " ".join(p for p in (err.context, err.problem) if p)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: invalid YAML: {err}") from None
    finally:
        loader.dispose()


def read_yaml_file(path: str | Path) -> Any:
    """Read and parse one YAML file; a missing/unreadable file or bad YAML is a :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory, expected a YAML file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} cannot be read: {err}") from None
    return parse_yaml(text, str(path))


def load_yaml(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML config; a ``base:`` key (a path or a list of paths relative to the file) is merged underneath it."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, resolved))
        raise ConfigError(f"config file {path}: 'base:' files form a cycle ({cycle})")
    data = read_yaml_file(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must contain a mapping at the top level, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    bases = [base] if isinstance(base, str) else base
    if not isinstance(bases, list) or not bases or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(
            f"config file {path}: 'base' must be a file path or a list of file paths "
            f"(relative to {path.parent}), got {base!r}"
        )
    merged: dict[str, Any] = {}
    for b in bases:
        base_path = path.parent / b
        if not base_path.is_file():
            raise ConfigError(f"config file {path}: base file {b!r} not found (looked for {base_path})")
        merged = deep_merge(merged, load_yaml(base_path, (*_chain, resolved)))
    return deep_merge(merged, data)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base`` (mappings merge, other values replace)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse one ``a.b.c=value`` override; the value is read as YAML (``0.1``, ``true``, ``[1, 2]``, ``null``)
    with the config files' rules (:class:`ConfigLoader`: ``off`` stays a string)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. train.optim.lr=0.1)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = parse_yaml(raw, "value") if raw.strip() else ""
    except ConfigError as err:
        raise ConfigError(f"override {text!r}: {err}") from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides to a config dict (creating intermediate sections)."""
    out = deep_merge({}, data)
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for part in keys[:-1]:
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: '{part}' is a value, not a section")
            node[part] = child = dict(child)
            node = child
        node[keys[-1]] = value
    return out
