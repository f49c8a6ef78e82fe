"""The extension client kit (clients/extension/) against openapi.yaml.

- every operation kit.js calls exists in the document with that method and path, and is
  the set of `@operation` tags of kit.d.ts (so the two files describe the same calls);
- every interface of kit.d.ts tagged `@schema <Name>` has exactly the schema's fields,
  optional where the schema does not require them, with matching types (scalars, nulls,
  enums, arrays, nested objects, references to other tagged interfaces);
- a method whose declared result is a tagged interface returns what its operation answers.

A field added to a response schema without the declarations, or a declaration the schema
does not back, fails here, as does a kit call to a path the API does not have.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.contract.conftest import operations, resolve

KIT_DIR = Path(__file__).resolve().parents[2] / "clients" / "extension"
KIT_JS = KIT_DIR / "kit.js"
KIT_DTS = KIT_DIR / "kit.d.ts"

CALL = re.compile(r"(?:request|send)\(\s*'(GET|POST|PUT|DELETE)',\s*(['`])(/[^'`]*)\2")
INTERFACE = re.compile(r"(?:/\*\*((?:[^*]|\*(?!/))*)\*/\s*)?export interface (\w+)(?:\s+extends\s+([\w, ]+?))?\s*\{")
OPERATION_TAG = re.compile(r"@operation (GET|POST|PUT|DELETE) (/\S*)")
METHOD_RESULT = re.compile(r"@operation (GET|POST|PUT|DELETE) (/\S*)[^\n]*\*/\s*(\w+)\([^)]*(?:\([^)]*\)[^)]*)*\)\s*:\s*Promise<(\w+)>")


def matching_brace(text: str, start: int) -> int:
    """Index of the `}` closing the `{` at `start`."""
    depth = 0
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    raise ValueError("unbalanced braces")


def split_top(text: str, separator: str) -> list[str]:
    """Split at `separator` outside of braces, brackets, angle brackets and parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char in "{[<(":
            depth += 1
        elif char in "}]>)":
            depth -= 1
        if char == separator and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def strip_comments(text: str) -> str:
    return re.sub(r"/\*(?:[^*]|\*(?!/))*\*/|//[^\n]*", "", text)


def object_fields(body: str) -> dict[str, tuple[str, bool]]:
    """`{a: T; b?: U}` body -> {name: (type, optional)}; methods are left out."""
    fields = {}
    for member in split_top(strip_comments(body), ";"):
        match = re.fullmatch(r"(?:readonly\s+)?(\w+)(\?)?\s*:\s*(.+)", member, re.S)
        if match:
            fields[match.group(1)] = (" ".join(match.group(3).split()), bool(match.group(2)))
    return fields


class Declarations:
    """The parts of kit.d.ts the checks need: tagged interfaces, type aliases, method results."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.interfaces: dict[str, dict[str, tuple[str, bool]]] = {}
        self.schema_of: dict[str, str] = {}
        self.omitted: dict[str, set[str]] = {}
        parents: dict[str, list[str]] = {}
        for match in INTERFACE.finditer(text):
            doc, name = match.group(1) or "", match.group(2)
            parents[name] = [p.strip() for p in (match.group(3) or "").split(",") if p.strip()]
            open_brace = match.end() - 1
            self.interfaces[name] = object_fields(text[open_brace + 1 : matching_brace(text, open_brace)])
            tag = re.search(r"@schema (\S+)", doc)
            if tag:
                self.schema_of[name] = tag.group(1)
                omit = re.search(r"@omit (\S+)", doc)
                self.omitted[name] = set(omit.group(1).split(",")) if omit else set()
        for name in self.interfaces:  # inherited fields first, as TypeScript merges them
            self.interfaces[name] = self.inherited(name, parents)
        self.aliases = {
            m.group(1): " ".join(m.group(2).split())
            for m in re.finditer(r"export type (\w+)\s*=\s*([^;]+);", strip_comments(text))
        }
        self.operations = {(m.group(1), m.group(2)) for m in OPERATION_TAG.finditer(text)}
        self.results = [(m.group(1), m.group(2), m.group(3), m.group(4)) for m in METHOD_RESULT.finditer(text)]


    def inherited(self, name: str, parents: dict[str, list[str]]) -> dict[str, tuple[str, bool]]:
        fields: dict[str, tuple[str, bool]] = {}
        for parent in parents.get(name, []):
            if parent in self.interfaces:
                fields.update(self.inherited(parent, parents))
        return {**fields, **self.interfaces[name]}


@pytest.fixture(scope="module")
def declarations() -> Declarations:
    return Declarations(KIT_DTS.read_text(encoding="utf-8"))


def schema_at(spec: dict[str, Any], reference: str) -> dict[str, Any]:
    """`Name`, `Name.prop`, `Name.prop[]`: a component schema or a part of it."""
    name, *parts = reference.split(".")
    node = resolve(spec, spec["components"]["schemas"][name])
    for part in parts:
        node = resolve(spec, node["properties"][part.removesuffix("[]")])
        if part.endswith("[]"):
            node = resolve(spec, node["items"])
    return node


def path_pattern(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")


def find_operation(spec: dict[str, Any], method: str, path: str) -> dict[str, Any] | None:
    """The document's operation for a call; `${...}` in the kit's path matches a template."""
    concrete = re.sub(r"\$\{[^}]+\}", "X", path)
    for op_method, op_path, operation in operations(spec):
        if op_method == method.lower() and (op_path == path or path_pattern(op_path).match(concrete)):
            return operation
    return None


def kit_calls() -> set[tuple[str, str]]:
    return {(m.group(1), m.group(3)) for m in CALL.finditer(KIT_JS.read_text(encoding="utf-8"))}


def test_every_call_of_the_kit_is_an_operation_of_the_api(spec):
    calls = kit_calls()
    assert len(calls) >= 15, f"the call pattern no longer finds the kit's requests: {sorted(calls)}"
    missing = sorted(f"{m} {p}" for m, p in calls if find_operation(spec, m, p) is None)
    assert not missing, f"kit.js calls operations openapi.yaml does not have: {missing}"


def test_the_declarations_name_the_same_operations_as_the_code(spec, declarations):
    def template(path: str) -> str:
        return re.sub(r"\$?\{[^}]*\}", "{}", path)

    in_code = {(m, template(p)) for m, p in kit_calls()}
    declared = {(m, template(p)) for m, p in declarations.operations}
    assert in_code == declared, f"only in kit.js: {sorted(in_code - declared)}; only in kit.d.ts: {sorted(declared - in_code)}"
    for method, path in declarations.operations:
        assert find_operation(spec, method, path) is not None, f"kit.d.ts names {method} {path}, which openapi.yaml lacks"


def type_matches(spec: dict[str, Any], declarations: Declarations, declared: str, schema: dict[str, Any], where: str) -> list[str]:
    """Problems between a declared TypeScript type and a schema ([] when they agree)."""
    schema = resolve(spec, schema)
    declared = declarations.aliases.get(declared, declared)
    alternatives = split_top(declared, "|")
    types = schema.get("type")
    if "oneOf" in schema or "anyOf" in schema:
        members = [resolve(spec, s) for s in schema.get("oneOf", schema.get("anyOf"))]
        nullable = any(m.get("type") == "null" for m in members)
        rest = [m for m in members if m.get("type") != "null"]
        if nullable != ("null" in alternatives):
            return [f"{where}: null {'allowed' if nullable else 'not allowed'} by the schema, declared `{declared}`"]
        others = " | ".join(a for a in alternatives if a != "null")
        return [] if len(rest) == 1 and not type_matches(spec, declarations, others, rest[0], where) else [f"{where}: `{declared}` vs oneOf"]
    if isinstance(types, list):
        nullable = "null" in types
        if nullable != ("null" in alternatives):
            return [f"{where}: null {'allowed' if nullable else 'not allowed'} by the schema, declared `{declared}`"]
        rest = [t for t in types if t != "null"]
        others = " | ".join(a for a in alternatives if a != "null")
        return type_matches(spec, declarations, others, {**schema, "type": rest[0]}, where) if len(rest) == 1 else []
    if "null" in alternatives:
        return [f"{where}: declared nullable (`{declared}`), the schema is not"]
    if "const" in schema:
        literal = "true" if schema["const"] is True else f"'{schema['const']}'"
        return [] if declared == literal else [f"{where}: const {schema['const']!r}, declared `{declared}`"]
    if "enum" in schema:
        literals = {a.strip("'") for a in alternatives}
        if declared == "string" or literals == set(schema["enum"]):
            return []
        return [f"{where}: enum {schema['enum']}, declared `{declared}`"]
    if types in ("integer", "number"):
        return [] if declared == "number" else [f"{where}: {types}, declared `{declared}`"]
    if types == "string":
        return [] if declared == "string" else [f"{where}: string, declared `{declared}`"]
    if types == "boolean":
        return [] if declared == "boolean" else [f"{where}: boolean, declared `{declared}`"]
    if types == "array":
        inner = re.fullmatch(r"(.+)\[\]", declared) or re.fullmatch(r"Array<(.+)>", declared)
        if not inner:
            return [f"{where}: array, declared `{declared}`"]
        item = inner.group(1).strip("()")
        return type_matches(spec, declarations, item, schema["items"], f"{where}[]")
    if types == "object" or "properties" in schema:
        if declared in declarations.interfaces:
            tagged = declarations.schema_of.get(declared)
            return [] if tagged and schema_at(spec, tagged) is schema else [f"{where}: `{declared}` is not tagged with this schema"]
        if declared.startswith("Record<string,"):
            return [] if "additionalProperties" in schema else [f"{where}: a record, the schema has fixed properties"]
        if declared.startswith("{"):
            return fields_match(spec, declarations, object_fields(declared[1:-1]), schema, where, set())
        return [f"{where}: object, declared `{declared}`"]
    return [f"{where}: cannot compare `{declared}` with {schema}"]


def fields_match(spec, declarations, fields, schema, where, omitted) -> list[str]:
    properties = {name: value for name, value in schema.get("properties", {}).items() if name not in omitted}
    required = set(schema.get("required", [])) - omitted
    problems = []
    for name in sorted(set(properties) - set(fields)):
        problems.append(f"{where}.{name}: in the schema, not declared")
    for name in sorted(set(fields) - set(properties)):
        problems.append(f"{where}.{name}: declared, not in the schema")
    for name in sorted(set(fields) & set(properties)):
        declared, optional = fields[name]
        if optional == (name in required):
            problems.append(f"{where}.{name}: {'required' if name in required else 'optional'} in the schema, declared {'optional' if optional else 'required'}")
        problems += type_matches(spec, declarations, declared, properties[name], f"{where}.{name}")
    return problems


def test_tagged_interfaces_have_the_schemas_fields(spec, declarations):
    assert len(declarations.schema_of) >= 15
    problems = []
    for interface, reference in sorted(declarations.schema_of.items()):
        schema = schema_at(spec, reference)
        problems += fields_match(spec, declarations, declarations.interfaces[interface], schema, f"{interface} ({reference})", declarations.omitted[interface])
    assert not problems, "kit.d.ts is out of step with openapi.yaml:\n" + "\n".join(problems)


def success_schemas(spec: dict[str, Any], operation: dict[str, Any]) -> list[dict[str, Any]]:
    """The success answers' schemas, with their oneOf members and the object properties within."""
    found = []
    for status, response in operation["responses"].items():
        if not status.startswith("2"):
            continue
        schema = resolve(spec, resolve(spec, response).get("content", {}).get("application/json", {}).get("schema", {}))
        stack = [schema, *[resolve(spec, s) for s in schema.get("oneOf", [])]]
        for node in list(stack):
            stack += [resolve(spec, p) for p in node.get("properties", {}).values()]
        found += stack
    return found


def test_declared_results_are_what_the_operations_answer(spec, declarations):
    checked = 0
    for method, path, name, result in declarations.results:
        if result not in declarations.schema_of:
            continue
        schema = schema_at(spec, declarations.schema_of[result])
        operation = find_operation(spec, method, path)
        assert any(candidate is schema for candidate in success_schemas(spec, operation)), (
            f"{name}() is declared to return {result} ({declarations.schema_of[result]}), which {method} {path} does not answer"
        )
        checked += 1
    assert checked >= 10, f"only {checked} method results were checked: has the declaration format changed?"


def test_the_checks_notice_a_field_out_of_step(spec, declarations):
    """A schema field missing from a declaration, and a declared field the schema lacks, are both reported."""
    reference = declarations.schema_of["Balance"]
    fields = dict(declarations.interfaces["Balance"])
    fields.pop("total_usage")
    fields["credits"] = ("number", False)
    problems = fields_match(spec, declarations, fields, schema_at(spec, reference), "Balance", set())
    assert problems == ["Balance.total_usage: in the schema, not declared", "Balance.credits: declared, not in the schema"]
    assert type_matches(spec, declarations, "string", schema_at(spec, "Balance")["properties"]["balance"], "x")
    assert type_matches(spec, declarations, "string", schema_at(spec, "CatchupJob")["properties"]["error"], "x")
