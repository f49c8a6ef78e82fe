"""The one builder of DynamoDB update expressions, so no repository writes `#f{i} = :v{i}` again.

A repository states what it changes in Python values (`set`, `add`, `set_if_absent`, `remove`)
and the condition in its own words; `update()` numbers the placeholders, encodes the values and
returns the parameters of one UpdateItem. The same dict, without `TableName` moved, is the
`Update` element of a TransactWriteItems (`{"Update": update(...)}`), so single writes and
transactions are built the same way.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from chalicelib.aws import store


def update(
    table: str,
    key: Mapping[str, str],
    *,
    set: Mapping[str, Any] | None = None,  # noqa: A002 - DynamoDB's own word
    set_if_absent: Mapping[str, Any] | None = None,
    add: Mapping[str, int] | None = None,
    remove: Iterable[str] = (),
    condition: str | None = None,
    names: Mapping[str, str] | None = None,
    values: Mapping[str, Any] | None = None,
    return_old_on_failure: bool = False,
) -> dict[str, Any]:
    """The parameters of one update of the item `key` in table `table` (a resource suffix).

    `set` values that are None are left out (nothing is written for them). `condition` uses
    its own placeholders, declared in `names` (`#x` -> attribute) and `values` (`:x` -> a
    Python value). Generated placeholders are `#u<n>`/`:u<n>`, so they never clash.
    """
    attribute_names: dict[str, str] = dict(names or {})
    attribute_values: dict[str, Any] = {k: store.to_attr(v) for k, v in (values or {}).items()}
    counter = iter(range(1_000_000))

    def placeholder(attribute: str, value: Any = None, with_value: bool = True) -> tuple[str, str]:
        n = next(counter)
        attribute_names[f"#u{n}"] = attribute
        if with_value:
            attribute_values[f":u{n}"] = store.to_attr(value)
        return f"#u{n}", f":u{n}"

    assignments: list[str] = []
    for attribute, value in (set or {}).items():
        if value is not None:
            name, val = placeholder(attribute, value)
            assignments.append(f"{name} = {val}")
    for attribute, value in (set_if_absent or {}).items():
        name, val = placeholder(attribute, value)
        assignments.append(f"{name} = if_not_exists({name}, {val})")
    additions = []
    for attribute, amount in (add or {}).items():
        name, val = placeholder(attribute, amount)
        additions.append(f"{name} {val}")
    removals = [placeholder(attribute, with_value=False)[0] for attribute in remove]

    clauses = []
    if assignments:
        clauses.append("SET " + ", ".join(assignments))
    if additions:
        clauses.append("ADD " + ", ".join(additions))
    if removals:
        clauses.append("REMOVE " + ", ".join(removals))
    if not clauses:
        raise ValueError("an update must change something")
    params: dict[str, Any] = {
        "TableName": store.table_name(table),
        "Key": store.key(**key),
        "UpdateExpression": " ".join(clauses),
        "ExpressionAttributeNames": attribute_names,
    }
    if attribute_values:
        params["ExpressionAttributeValues"] = attribute_values
    if condition:
        params["ConditionExpression"] = condition
    if return_old_on_failure:
        params["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
    return params
