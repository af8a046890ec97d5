"""Scenario YAML (text, file or an already parsed mapping) -> :class:`~perfsim.scenario.model.Scenario`.

The walk is generic over the model dataclasses: at each mapping, an unknown key is refused
(naming its path and the keys allowed there), a missing required key is refused, nested
objects and lists of objects are built recursively, and a ConfigError raised by a nested
object's own checks gets that object's path prefixed (``hosts.`` + ``nic_gbps``).  The first
error stops the load: every bad file gives exactly one ConfigError.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from perfsim.errors import ConfigError
from perfsim.scenario.model import Scenario, hints

T = TypeVar("T")


def _join(prefix: str, name: str) -> str:
    if not prefix:
        return name
    return f"{prefix}{name}" if name.startswith("[") else f"{prefix}.{name}"


def _model_class(hint: Any) -> type | None:
    return hint if dataclasses.is_dataclass(hint) and isinstance(hint, type) else None


def build(cls: type[T], data: Any, path: str = "") -> T:
    """Build model dataclass ``cls`` from a parsed YAML mapping; errors carry ``path``."""
    if not isinstance(data, dict):
        raise ConfigError(path or "<document>", data, f"a mapping with keys {', '.join(_names(cls))}")
    names = _names(cls)
    for key in data:
        if key not in names:
            raise ConfigError(_join(path, str(key)), data[key], f"one of the keys {', '.join(names)}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        sub = _join(path, f.name)
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(sub, "nothing (missing)", f"a value: {f.name} is required")
            continue
        kwargs[f.name] = _value(hints(cls)[f.name], data[f.name], sub)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        # the object's own checks name fields relative to it (the root's are full paths)
        name = _join(path, exc.field)
        raise ConfigError(name, exc.value, exc.allowed) from None


def _value(hint: Any, value: Any, path: str) -> Any:
    """Convert a parsed YAML value for a field of type ``hint``: nested objects are built,
    lists of objects become tuples; anything else is left for the model's type check."""
    model = _model_class(hint)
    if model is not None:
        return build(model, value, path)
    if typing.get_origin(hint) is tuple:
        item = _model_class(typing.get_args(hint)[0])
        if not isinstance(value, list):
            raise ConfigError(path, value, "a list" + (f" of mappings ({item.__name__.lower()} entries)" if item else ""))
        if item is None:
            return tuple(value)
        return tuple(build(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    return value


def _names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def load_dict(data: Any, base_dir: Path | None = None) -> Scenario:
    """Build a Scenario from a parsed mapping. A relative ``profile`` path is resolved against
    ``base_dir`` (the scenario file's directory)."""
    scenario = build(Scenario, data)
    prof = scenario.profile
    if base_dir is not None and (prof.endswith((".yaml", ".yml")) or "/" in prof):
        p = Path(prof)
        if not p.is_absolute():
            scenario = dataclasses.replace(scenario, profile=str(base_dir / p))
    return scenario


def parse_yaml(text: str, source: str) -> Any:
    """YAML text -> Python objects; malformed YAML is a ConfigError naming ``source`` and the line."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError(source, "malformed YAML", f"valid YAML ({where}{problem})") from None


def load_text(text: str, source: str = "<string>", base_dir: Path | None = None) -> Scenario:
    """Parse and validate scenario YAML ``text`` (``source`` names it in errors)."""
    return load_dict(parse_yaml(text, source), base_dir)


def read_text_file(path: str | Path, field: str, what: str) -> str:
    """The UTF-8 text of ``path``; ConfigError(``field``) naming ``what`` when it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(field, str(path), f"a readable {what} ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(field, str(path), "a UTF-8 text file") from None


def load_file(path: str | Path) -> Scenario:
    """Read, parse and validate a scenario file."""
    text = read_text_file(path, "scenario", "scenario file")
    return load_text(text, str(path), Path(path).parent)
