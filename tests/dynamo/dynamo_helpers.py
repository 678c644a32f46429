"""Helpers for the DynamoDB access tests (imported by their conftest and test modules)."""
from __future__ import annotations

import threading
import uuid
from typing import Any, Dict, List, Optional


class Tables:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.names: List[str] = []

    def create(self, hash_key: str, hash_type: str = "S", range_key: Optional[str] = None,
               range_type: str = "N") -> str:
        name = "t-" + uuid.uuid4().hex[:12]
        attrs = [{"AttributeName": hash_key, "AttributeType": hash_type}]
        schema = [{"AttributeName": hash_key, "KeyType": "HASH"}]
        if range_key:
            attrs.append({"AttributeName": range_key, "AttributeType": range_type})
            schema.append({"AttributeName": range_key, "KeyType": "RANGE"})
        self.client.create_table(TableName=name, AttributeDefinitions=attrs, KeySchema=schema,
                                 BillingMode="PAY_PER_REQUEST")
        self.names.append(name)
        return name

    def put_all(self, name: str, items: List[Dict[str, Any]]) -> None:
        for start in range(0, len(items), 25):
            chunk = items[start:start + 25]
            self.client.batch_write_item(RequestItems={name: [{"PutRequest": {"Item": i}} for i in chunk]})

    def scan_all(self, name: str) -> List[Dict[str, Any]]:
        items: List[Dict[str, Any]] = []
        kwargs: Dict[str, Any] = {"TableName": name}
        while True:
            page = self.client.scan(**kwargs)
            items.extend(page["Items"])
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


class FakeClock:
    """Simulated time: ``sleep`` advances it; thread-safe so limiter tests may use threads."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: List[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def canonical(item: Dict[str, Any]) -> Any:
    """An item as a hashable, order-free value: sets are unordered in DynamoDB, so sort their members."""
    def value(v: Dict[str, Any]) -> Any:
        (tag, raw), = v.items()
        if tag in ("SS", "NS", "BS"):
            return (tag, tuple(sorted(raw)))
        if tag == "M":
            return (tag, canonical(raw))
        if tag == "L":
            return (tag, tuple(value(x) for x in raw))
        return (tag, raw)
    return tuple(sorted((name, value(v)) for name, v in item.items()))
