"""The one builder of DynamoDB expressions, with generated placeholders.

    ex = Expression()
    ex.increment("version").set("title", s_attr("Trip")).remove("summary")
    ex.require(SESSION_ALIVE, ex.eq("user_id", s_attr(owner)))
    client.update_item(..., **ex.params())

Every attribute name becomes ``#n<i>`` (the same placeholder each time it is named; reserved words need no care)
and every value ``:v<i>``. Update (SET / ADD / REMOVE), condition, key condition and filter clauses share the two
maps, so one request's expressions are built in one place and no caller numbers placeholders by hand.
"""

from __future__ import annotations

from typing import Any, Self

from chatcore.dynamo.keys import Item, n_attr


class Expression:
    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: Item = {}
        self._placeholders: dict[str, str] = {}
        self._set: list[str] = []
        self._add: list[str] = []
        self._remove: list[str] = []
        self._conditions: list[str] = []
        self._keys: list[str] = []
        self._filters: list[str] = []

    # -- placeholders ---------------------------------------------------------------------------------------

    def name(self, attribute: str) -> str:
        placeholder = self._placeholders.get(attribute)
        if placeholder is None:
            placeholder = self._placeholders[attribute] = f"#n{len(self._placeholders)}"
            self.names[placeholder] = attribute
        return placeholder

    def value(self, value: dict[str, Any]) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = value
        return placeholder

    def eq(self, attribute: str, value: dict[str, Any]) -> str:
        """The clause ``attribute = value``."""
        return f"{self.name(attribute)} = {self.value(value)}"

    def one_of(self, attribute: str, values: list[dict[str, Any]]) -> str:
        """The clause ``attribute IN (values...)``."""
        return f"{self.name(attribute)} IN ({', '.join(self.value(value) for value in values)})"

    # -- update ---------------------------------------------------------------------------------------------

    def set(self, attribute: str, value: dict[str, Any]) -> Self:
        self._set.append(self.eq(attribute, value))
        return self

    def set_if_absent(self, attribute: str, value: dict[str, Any]) -> Self:
        name = self.name(attribute)
        self._set.append(f"{name} = if_not_exists({name}, {self.value(value)})")
        return self

    def set_unless(self, attribute: str, kept: str, value: dict[str, Any]) -> Self:
        """``attribute = kept`` when ``kept`` exists, else ``value`` (no condition, so it never fails a write)."""
        self._set.append(f"{self.name(attribute)} = if_not_exists({self.name(kept)}, {self.value(value)})")
        return self

    def increment(self, attribute: str, *, from_zero: bool = False) -> Self:
        """``attribute + 1``; with ``from_zero`` a missing attribute counts as 0 (the item's first write)."""
        name = self.name(attribute)
        current = f"if_not_exists({name}, {self.value(n_attr(0))})" if from_zero else name
        self._set.append(f"{name} = {current} + {self.value(n_attr(1))}")
        return self

    def add(self, attribute: str, value: dict[str, Any]) -> Self:
        self._add.append(f"{self.name(attribute)} {self.value(value)}")
        return self

    def remove(self, *attributes: str) -> Self:
        self._remove.extend(self.name(attribute) for attribute in attributes)
        return self

    # -- conditions -----------------------------------------------------------------------------------------

    def require(self, *clauses: str) -> Self:
        """Conditions of the write, joined with AND."""
        self._conditions.extend(clauses)
        return self

    def key(self, *clauses: str) -> Self:
        """Key conditions of a query, joined with AND."""
        self._keys.extend(clauses)
        return self

    def filter(self, *clauses: str) -> Self:
        """Filter conditions of a query, joined with AND."""
        self._filters.extend(clauses)
        return self

    def update_expression(self) -> str:
        parts = []
        for keyword, clauses in (("SET", self._set), ("ADD", self._add), ("REMOVE", self._remove)):
            if clauses:
                parts.append(f"{keyword} {', '.join(clauses)}")
        return " ".join(parts)

    def params(self) -> dict[str, Any]:
        """The request parameters of what was built (empty parts and maps left out, as DynamoDB requires)."""
        params: dict[str, Any] = {}
        if update := self.update_expression():
            params["UpdateExpression"] = update
        for parameter, clauses in (
            ("ConditionExpression", self._conditions),
            ("KeyConditionExpression", self._keys),
            ("FilterExpression", self._filters),
        ):
            if clauses:
                params[parameter] = " AND ".join(clauses)
        if self.names:
            params["ExpressionAttributeNames"] = dict(self.names)
        if self.values:
            params["ExpressionAttributeValues"] = dict(self.values)
        return params
