"""JSON Schema (draft 2020-12) of the scenario format, generated from the model dataclasses.

Each dataclass of :mod:`perfsim.scenario.model` becomes a ``$defs`` entry (an object with
``additionalProperties: false``, its fields as ``properties``, the fields without a default as
``required``); each field's type hint gives its JSON type and its ``metadata`` its
``description``, ``default`` and limits — the same metadata the model validates with.  The
schema checks each value on its own; cross-field rules (names that must exist, ports allocated
twice, reachability) are only in the model and :func:`perfsim.scenario.compile.check`.

``python -m perfsim.scenario.schema`` writes ``perfsim/scenario/scenario.schema.json``; a test
compares the shipped file with a freshly generated schema so that it cannot go stale.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from perfsim.scenario.model import FORMAT_VERSION, Scenario, hints

SCHEMA_PATH = Path(__file__).with_name("scenario.schema.json")
SCHEMA_ID = "https://perfsim.invalid/scenario.schema.json"
_LIMITS = ("minimum", "maximum", "exclusiveMinimum", "enum", "pattern", "const", "minItems")
_JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}


def _type_schema(hint: Any, defs: dict[str, Any]) -> dict[str, Any]:
    if isinstance(hint, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        inner = _type_schema(args[0], defs)
        if "type" in inner and isinstance(inner["type"], str):
            return {**inner, "type": [inner["type"], "null"]}
        return {"anyOf": [inner, {"type": "null"}]}
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        _object_schema(hint, defs)
        return {"$ref": f"#/$defs/{hint.__name__}"}
    origin = typing.get_origin(hint)
    if origin is tuple:
        return {"type": "array", "items": _type_schema(typing.get_args(hint)[0], defs)}
    if origin is dict:
        return {"type": "object"}
    return {"type": _JSON_TYPES[hint]}


def _object_schema(cls: type, defs: dict[str, Any]) -> None:
    if cls.__name__ in defs:
        return
    defs[cls.__name__] = {}  # placeholder against recursion
    props: dict[str, Any] = {}
    required: list[str] = []
    for f in dataclasses.fields(cls):
        prop = _type_schema(hints(cls)[f.name], defs)
        meta = f.metadata
        if meta.get("doc"):
            prop["description"] = meta["doc"]
        for key in _LIMITS:
            if key in meta:
                value = meta[key]
                prop[key] = list(value) if isinstance(value, tuple) else value
        if f.default is not dataclasses.MISSING:
            if f.default is not None:
                prop["default"] = list(f.default) if isinstance(f.default, tuple) else f.default
        elif f.default_factory is not dataclasses.MISSING and not dataclasses.is_dataclass(f.default_factory):
            prop["default"] = f.default_factory()
        else:
            if f.default_factory is dataclasses.MISSING:
                required.append(f.name)
        props[f.name] = prop
    schema: dict[str, Any] = {"type": "object", "description": (cls.__doc__ or "").strip().splitlines()[0],
                              "properties": props, "additionalProperties": False}
    if required:
        schema["required"] = required
    defs[cls.__name__] = schema


def generate() -> dict[str, Any]:
    """The scenario JSON Schema as a dict (deterministic: same model, same dict)."""
    defs: dict[str, Any] = {}
    _object_schema(Scenario, defs)
    root = defs.pop("Scenario")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": f"perfsim scenario, format version {FORMAT_VERSION}",
        **root,
        "$defs": dict(sorted(defs.items())),
    }


def render() -> str:
    """The schema as the text of the shipped file."""
    return json.dumps(generate(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the schema to ``argv[0]`` or :data:`SCHEMA_PATH`."""
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else SCHEMA_PATH
    path.write_text(render(), encoding="utf-8")
    sys.stderr.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
