"""One mechanism for request input: parse the raw body, then check it against a declared schema.

Every route that takes a body declares a `Schema`; nothing is validated ad hoc. Strings
are always bounded, integers are real integers (not booleans, not floats), and unknown
fields are refused unless a schema says they may be ignored.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from chalicelib.core.errors import BadRequest, PayloadTooLarge, ValidationFailed

DEFAULT_MAX_BODY_BYTES = 16 * 1024
MAX_DEPTH = 8


@dataclass(frozen=True)
class Field:
    kind: type  # str, int, bool, float, list, dict
    required: bool = False
    max_length: int = 256  # strings: characters; lists: items
    min_length: int = 0
    minimum: float | None = None
    maximum: float | None = None
    pattern: str | None = None
    choices: tuple[Any, ...] | None = None
    normalize: Callable[[Any], Any] | None = None
    default: Any = None


@dataclass(frozen=True)
class Schema:
    fields: Mapping[str, Field]
    allow_unknown: bool = False
    # Fields an installed client sends that we accept and drop, unread (identity comes only
    # from the token, never from a body's `user_id`). Every other unknown field is refused.
    ignored: frozenset[str] = frozenset()
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    name: str = ""
    compiled: dict[str, re.Pattern[str]] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for name, spec in self.fields.items():
            if spec.pattern:
                self.compiled[name] = re.compile(spec.pattern)


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def _has_lone_surrogate(value: Any, level: int = 0) -> bool:
    """True if a string holds half a surrogate pair (`"\\ud800"`): valid JSON escape syntax,
    but not text; it cannot be encoded as UTF-8, so storing or echoing it would fail later."""
    if level > MAX_DEPTH + 1:
        return False  # refused as too deep anyway
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k, level) or _has_lone_surrogate(v, level + 1)
                   for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v, level + 1) for v in value)
    return False


def parse_json_object(raw: bytes | str | None, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> dict[str, Any]:
    """Decode a request body that must be a JSON object; every failure is a clear 4xx."""
    if raw is None or raw == b"" or raw == "":
        return {}
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"Request body must be at most {max_bytes} bytes", limit=max_bytes)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("Request body is not valid UTF-8", code="invalid_json") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise BadRequest("Request body is not valid JSON", code="invalid_json") from None
    if "\\u" in text and _has_lone_surrogate(value):
        raise BadRequest("Request body is not valid JSON", code="invalid_json")
    if not isinstance(value, dict):
        raise ValidationFailed("Request body must be a JSON object", code="invalid_body")
    if _depth(value) > MAX_DEPTH:
        raise ValidationFailed("Request body is nested too deeply", code="invalid_body")
    return value


def _type_name(kind: type) -> str:
    return {str: "a string", int: "an integer", bool: "a boolean", float: "a number",
            list: "a list", dict: "an object"}[kind]


def _check(name: str, spec: Field, value: Any, compiled: re.Pattern[str] | None) -> Any:
    def fail(message: str) -> ValidationFailed:
        return ValidationFailed(f"'{name}' {message}", field=name)

    kind_ok = isinstance(value, spec.kind) and not (spec.kind is int and isinstance(value, bool))
    if spec.kind is float:
        kind_ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind_ok and not math.isfinite(value):
            raise fail("must be a finite number")
    if not kind_ok:
        raise fail(f"must be {_type_name(spec.kind)}")
    if spec.normalize is not None:
        value = spec.normalize(value)
    if isinstance(value, (str, list)):
        unit = "characters" if isinstance(value, str) else "items"
        if len(value) > spec.max_length:
            raise fail(f"must be at most {spec.max_length} {unit}")
        if len(value) < spec.min_length:
            raise fail(f"must be at least {spec.min_length} {unit}" if spec.min_length > 1
                       else "must not be empty")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if spec.minimum is not None and value < spec.minimum:
            raise fail(f"must be at least {spec.minimum:g}")
        if spec.maximum is not None and value > spec.maximum:
            raise fail(f"must be at most {spec.maximum:g}")
    if compiled is not None and not compiled.fullmatch(value):
        raise fail("has an invalid format")
    if spec.choices is not None and value not in spec.choices:
        raise fail("must be one of: " + ", ".join(map(str, spec.choices)))
    return value


def validate(schema: Schema, data: Mapping[str, Any]) -> dict[str, Any]:
    """Return the validated (and normalised) fields; absent optional fields get their default."""
    unknown = sorted(set(data) - set(schema.fields) - schema.ignored)
    if unknown and not schema.allow_unknown:
        raise ValidationFailed(
            f"Unknown field: '{unknown[0][:64]}'", code="unknown_field", field=unknown[0][:64]
        )
    result: dict[str, Any] = {}
    for name, spec in schema.fields.items():
        if name not in data or data[name] is None:
            if spec.required:
                raise ValidationFailed(f"'{name}' is required", code="missing_field", field=name)
            result[name] = spec.default
            continue
        result[name] = _check(name, spec, data[name], schema.compiled.get(name))
    return result


def parse_body(raw: bytes | str | None, schema: Schema) -> dict[str, Any]:
    return validate(schema, parse_json_object(raw, schema.max_body_bytes))
