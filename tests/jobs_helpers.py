"""Helpers for the export / restore / verify / jobs tests: tables holding every DynamoDB type, and whole-result
comparisons of a table with a vault (both sides as canonical item text, via the project's codec)."""
from __future__ import annotations

import uuid
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ddbvault import codec
from ddbvault.vault import layout

# Numbers at the edges of what DynamoDB keeps: 38 digits, the smallest and largest magnitudes, zeros and signs.
EDGE_NUMBERS = (
    "12345678901234567890123456789012345678",
    "-0.12345678901234567890123456789012345678",
    "1E-130",
    "-1E-130",
    "9.9999999999999999999999999999999999999E+125",
    "-9.9999999999999999999999999999999999999E+125",
    "1E+125",
    "100000000000000000000000000000000000000",  # 10**38: boto3's TypeDeserializer raises on it
    "0",
    "-0.5",
    "1.50",
)


def name(prefix: str) -> str:
    """A table name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def every_type(i: int) -> Dict[str, Any]:
    """Non-key attributes of item ``i``: every type tag, edge numbers, empty S/B, nested binaries, unicode."""
    number = EDGE_NUMBERS[i % len(EDGE_NUMBERS)]
    return {
        "s": {"S": f"value {i} \u00e9\u4e2d\U0001f600"},
        "empty_s": {"S": ""},
        "n": {"N": number},
        "b": {"B": bytes([i % 256, 0, 255, 10])},
        "empty_b": {"B": b""},
        "ss": {"SS": [f"m{i % 3}", "\u00fcber", "z"]},
        "ns": {"NS": ["1", number, str(i + 2)]},  # no edge number equals 1 or i + 2
        "bs": {"BS": [b"\x00", bytes([i % 200 + 1]), b"\xff\xfe"]},
        "m": {"M": {
            "bin": {"B": bytes([i % 7] * 3)},
            "bins": {"BS": [b"\x01\x02", b"\x03"]},
            "deep": {"M": {"l": {"L": [{"B": b"\xde\xad"}, {"N": number}, {"M": {}}, {"L": []}]}}},
            "a.b": {"S": "dotted key"},
        }},
        "l": {"L": [{"S": "x"}, {"N": "-3.25"}, {"B": b"\x00\x01"}, {"NULL": True}, {"BOOL": False},
                    {"SS": ["a"]}, {"L": [{"BS": [b"\x09"]}]}, {"S": ""}]},
        "null": {"NULL": True},
        "yes": {"BOOL": i % 2 == 0},
        "\u540d\u524d": {"S": "unicode attribute name"},
    }


def put_items(client: Any, table: str, items: Sequence[Dict[str, Any]]) -> None:
    for start in range(0, len(items), 25):
        chunk = items[start:start + 25]
        left = {table: [{"PutRequest": {"Item": item}} for item in chunk]}
        while left:
            left = client.batch_write_item(RequestItems=left).get("UnprocessedItems") or {}


def create_table(client: Any, table: str, keys: Sequence[Tuple[str, str]], *,
                 attributes: Sequence[Tuple[str, str]] = (), gsis: Sequence[Dict[str, Any]] = (),
                 lsis: Sequence[Dict[str, Any]] = (), stream: Optional[str] = None,
                 provisioned: Optional[Tuple[int, int]] = None, tags: Optional[Dict[str, str]] = None) -> None:
    """CreateTable with ``keys`` [(name, type) hash first], extra key ``attributes`` of indexes, and settings."""
    defs = [{"AttributeName": n, "AttributeType": t} for n, t in list(keys) + list(attributes)]
    schema = [{"AttributeName": n, "KeyType": kt} for (n, _), kt in zip(keys, ("HASH", "RANGE"))]
    request: Dict[str, Any] = {"TableName": table, "AttributeDefinitions": defs, "KeySchema": schema}
    if provisioned:
        request["BillingMode"] = "PROVISIONED"
        request["ProvisionedThroughput"] = {"ReadCapacityUnits": provisioned[0],
                                            "WriteCapacityUnits": provisioned[1]}
    else:
        request["BillingMode"] = "PAY_PER_REQUEST"
    if gsis:
        request["GlobalSecondaryIndexes"] = [dict(g, **({"ProvisionedThroughput": request["ProvisionedThroughput"]}
                                                       if provisioned else {})) for g in gsis]
    if lsis:
        request["LocalSecondaryIndexes"] = list(lsis)
    if stream:
        request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream}
    if tags:
        request["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
    client.create_table(**request)


def scan_all(client: Any, table: str) -> List[Dict[str, Any]]:
    """Every item of ``table`` through the low-level client (B as bytes), one plain Scan."""
    items: List[Dict[str, Any]] = []
    kwargs: Dict[str, Any] = {"TableName": table}
    while True:
        page = client.scan(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def texts(items: Sequence[Dict[str, Any]]) -> List[str]:
    """Items as sorted canonical texts: a multiset, so a duplicate shows as well as a missing item."""
    return sorted(codec.encode_item(item) for item in items)


def table_texts(client: Any, table: str) -> List[str]:
    return texts(scan_all(client, table))


def items_path(vault: str) -> str:
    return layout.join(vault, layout.ITEMS_DIR)


def vault_rows(spark, vault: str, version: Optional[int] = None) -> List[Any]:
    """The vault's rows (small test tables only: the tests compare whole results on the driver)."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(items_path(vault)).collect()


def vault_texts(spark, vault: str, version: Optional[int] = None) -> List[str]:
    """The vault's items, decoded and re-encoded (so the stored text must round-trip), sorted."""
    return sorted(codec.encode_item(codec.decode_item(r[layout.ITEM])) for r in vault_rows(spark, vault, version))


def assert_vault_equals(spark, vault: str, expected_items: Sequence[Dict[str, Any]],
                        hash_key: str, range_key: Optional[str], *, version: Optional[int] = None) -> None:
    """Every vault row equals the expected item, byte for byte, with its key columns; nothing more, nothing less."""
    rows = vault_rows(spark, vault, version)
    got = sorted((r[layout.PK], r[layout.SK], r[layout.ITEM]) for r in rows)
    want = sorted((codec.key_value(i[hash_key]), codec.key_value(i[range_key]) if range_key else None,
                   codec.encode_item(i)) for i in expected_items)
    assert got == want
    # The stored text decodes to the client form and encodes back to the very same text.
    assert sorted(codec.encode_item(codec.decode_item(r[layout.ITEM])) for r in rows) == sorted(w[2] for w in want)


def history_versions(spark, vault: str) -> List[int]:
    from delta.tables import DeltaTable

    return sorted(r.version for r in DeltaTable.forPath(spark, items_path(vault)).history().collect())
