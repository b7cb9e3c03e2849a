"""The table's requests: each one made through ``chatcore.aws.call`` (a thread, botocore errors translated).

The store and the operation records hold a ``Table`` and never see the client; transaction items are built here
too, so ``TableName`` is written in one place.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from chatcore.aws import DYNAMODB, call
from chatcore.dynamo.expressions import Expression
from chatcore.dynamo.keys import ABSENT, Item, n_attr
from chatcore.errors import ServiceRefused, ServiceUnavailable

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

SERVICE = DYNAMODB
BATCH_SIZE = 25
GET_BATCH_SIZE = 100


class Table:
    def __init__(
        self,
        name: str,
        *,
        client_factory: Callable[[], DynamoDBClient],
        session_ttl_days: int = 0,
    ) -> None:
        self.name = name
        self._client_factory = client_factory
        self._session_ttl_days = session_ttl_days

    @property
    def _db(self) -> DynamoDBClient:
        return self._client_factory()

    def session_expiry(self, now: datetime) -> dict[str, str] | None:
        """``expires_at`` of a session's items written at ``now``; None when sessions do not expire."""
        if self._session_ttl_days <= 0:
            return None
        return n_attr(int((now + timedelta(days=self._session_ttl_days)).timestamp()))

    # -- single requests ------------------------------------------------------------------------------------

    async def get(self, key: Item) -> Item | None:
        found = await call(SERVICE, self._db.get_item, TableName=self.name, Key=key, ConsistentRead=True)
        return found.get("Item")

    async def put_new(self, item: Item) -> bool:
        """Put an item that must not exist yet; False when it does."""
        try:
            await call(SERVICE, self._db.put_item, TableName=self.name, Item=item, ConditionExpression=ABSENT)
        except ServiceRefused as exc:
            if exc.condition_failed:
                return False
            raise
        return True

    async def update(self, key: Item, expression: Expression, **options: Any) -> Item:
        """Apply the update; returns the attributes ``ReturnValues`` asked for (``{}`` when none)."""
        result = await call(
            SERVICE, self._db.update_item, TableName=self.name, Key=key, **expression.params(), **options
        )
        return dict(result.get("Attributes", {}))

    async def update_if(self, key: Item, expression: Expression, **options: Any) -> Item | None:
        """``update``, or None when its condition was false."""
        try:
            return await self.update(key, expression, **options)
        except ServiceRefused as exc:
            if exc.condition_failed:
                return None
            raise

    async def delete(self, key: Item) -> Item | None:
        """Delete the item; the item as it was, or None when there was none."""
        result = await call(SERVICE, self._db.delete_item, TableName=self.name, Key=key, ReturnValues="ALL_OLD")
        found = result.get("Attributes")
        return dict(found) if found else None

    async def get_many(self, keys: list[Item]) -> list[Item]:
        """The items that exist among ``keys``, consistently read (batches of 100, unprocessed keys retried)."""
        found: list[Item] = []
        for start in range(0, len(keys), GET_BATCH_SIZE):
            request: Any = {self.name: {"Keys": keys[start : start + GET_BATCH_SIZE], "ConsistentRead": True}}
            for attempt in range(8):
                result = await call(SERVICE, self._db.batch_get_item, RequestItems=request)
                found.extend(result.get("Responses", {}).get(self.name, []))
                request = result.get("UnprocessedKeys") or {}
                if not request:
                    break
                await asyncio.sleep(0.05 * 2**attempt)
            else:
                raise ServiceUnavailable("DynamoDB kept throttling the read; try again")
        return found

    async def pages(self, expression: Expression, **options: Any) -> AsyncGenerator[dict[str, Any]]:
        """Query pages in order (``Items``, ``LastEvaluatedKey``); ``ExclusiveStartKey`` may start it later."""
        kwargs: dict[str, Any] = {"TableName": self.name, **expression.params(), **options}
        while True:
            page: dict[str, Any] = dict(await call(SERVICE, self._db.query, **kwargs))
            yield page
            last = page.get("LastEvaluatedKey")
            if not last:
                return
            kwargs["ExclusiveStartKey"] = last

    async def scan(self, expression: Expression) -> AsyncGenerator[list[Item]]:
        """The whole table, page by page, as far as the expression's filter lets through (maintenance only)."""
        kwargs: dict[str, Any] = {"TableName": self.name, "ConsistentRead": True, **expression.params()}
        while True:
            page: dict[str, Any] = dict(await call(SERVICE, self._db.scan, **kwargs))
            yield list(page.get("Items", []))
            if not page.get("LastEvaluatedKey"):
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def query(self, expression: Expression, **options: Any) -> list[Item]:
        """Every item the query matches, consistently read, all pages."""
        items: list[Item] = []
        async for page in self.pages(expression, ConsistentRead=True, **options):
            items.extend(page.get("Items", []))
        return items

    async def transact(self, items: list[TransactWriteItemTypeDef]) -> None:
        """One transaction. botocore gives each call its own ``ClientRequestToken`` (the parameter is an idempotency
        token in its model) and resends it with each retry, so a retry after a lost answer of a transaction that was
        applied is answered as a success, not applied (nor refused) again; a caller that retries after a refusal
        builds new items, so makes a new call (the same token with other items would be refused)."""
        await call(SERVICE, self._db.transact_write_items, TransactItems=items)

    async def delete_all(self, keys: list[Item]) -> None:
        """Delete the items (batches of 25, unprocessed ones retried with backoff)."""
        for start in range(0, len(keys), BATCH_SIZE):
            requests: list[Any] = [{"DeleteRequest": {"Key": key}} for key in keys[start : start + BATCH_SIZE]]
            for attempt in range(8):
                result = await call(SERVICE, self._db.batch_write_item, RequestItems={self.name: requests})
                requests = list(result.get("UnprocessedItems", {}).get(self.name, []))
                if not requests:
                    break
                await asyncio.sleep(0.05 * 2**attempt)
            else:
                raise ServiceUnavailable("DynamoDB kept throttling the delete; it will finish on retry")

    # -- transaction items ----------------------------------------------------------------------------------

    def put_item(self, item: Item, *, condition: str | None) -> TransactWriteItemTypeDef:
        """A put; ``condition=None`` replaces whatever is there (another item of the transaction guards it)."""
        if condition is None:
            return {"Put": {"TableName": self.name, "Item": item}}
        return {"Put": {"TableName": self.name, "Item": item, "ConditionExpression": condition}}

    def update_item(self, key: Item, expression: Expression) -> TransactWriteItemTypeDef:
        return {"Update": {"TableName": self.name, "Key": key, **expression.params()}}  # type: ignore[typeddict-item]

    def check_item(self, key: Item, *, condition: str | Expression) -> TransactWriteItemTypeDef:
        if isinstance(condition, Expression):
            return {"ConditionCheck": {"TableName": self.name, "Key": key, **condition.params()}}  # type: ignore[typeddict-item]
        return {"ConditionCheck": {"TableName": self.name, "Key": key, "ConditionExpression": condition}}
