"""query.project: typed columns from the vault's item text, null where absent or of another DynamoDB type."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from pyspark.sql import types as T

from ddbvault import codec, query
from ddbvault.errors import UsageError
from ddbvault.vault import layout

ITEMS = [
    {"id": {"S": "a"}, "price": {"N": "12.345"}, "tags": {"SS": ["red", "blue"]},
     "profile": {"M": {"age": {"N": "42"}, "first.name": {"S": "Ann"}, "Age": {"N": "7"}}},
     "scores": {"NS": ["3", "1.5"]}, "ok": {"BOOL": True}, "raw": {"B": b"\x00\xff"},
     "events": {"L": [{"M": {"kind": {"S": "login"}}}, {"M": {"kind": {"S": "logout"}}}]},
     "a.b": {"S": "dotted"}},
    {"id": {"S": "b"}, "price": {"S": "free"}, "tags": {"L": [{"S": "x"}, {"S": "y"}]},
     "profile": {"M": {"age": {"S": "unknown"}}}, "scores": {"L": [{"N": "10"}, {"N": "-2"}]},
     "ok": {"S": "yes"}, "events": {"L": []}},
    {"id": {"S": "c"}, "tags": {"L": [{"S": "x"}, {"N": "1"}]}, "profile": {"S": "not a map"},
     "scores": {"L": []}, "price": {"N": "1" + "0" * 38}},
    {"id": {"S": "d"}},
]

MAPPING = {
    "price": "decimal(20,2)",
    "tags": "array<string>",
    "profile.age": "int",
    'profile["first.name"]': "string",
    "scores": "array<double>",
    "ok": "boolean",
    "raw": "binary",
    "events[1].kind": "string",
    "events[5].kind": "string",
    '["a.b"]': "string",
}


@pytest.fixture
def items_df(spark):
    rows = []
    for item in ITEMS:
        pk, sk, text, size = codec.to_vault_record(item, "id", None)
        rows.append((pk, sk, text, size, layout.SOURCE_EXPORT, dt.datetime(2024, 1, 1), None, "t", None))
    return spark.createDataFrame(rows, layout.items_schema())


def test_project_whole_result(items_df):
    out = query.project(items_df, MAPPING)
    assert out.columns == [*layout.ITEM_COLUMNS, *MAPPING]
    types = {f.name: f.dataType for f in out.schema.fields}
    assert types["price"] == T.DecimalType(20, 2)
    assert types["tags"] == T.ArrayType(T.StringType())
    assert types["profile.age"] == T.IntegerType()
    assert types["scores"] == T.ArrayType(T.DoubleType())
    assert types["raw"] == T.BinaryType()

    got = {r["pk"]: tuple(r[c] for c in MAPPING)
           for r in out.select("pk", *[f"`{c}`" for c in MAPPING]).collect()}
    assert got == {
        # price, tags, profile.age, first.name, scores, ok, raw, events[1].kind, events[5].kind, a.b
        "a": (Decimal("12.35"), ["blue", "red"], 42, "Ann", [1.5, 3.0], True, bytearray(b"\x00\xff"),
              "logout", None, "dotted"),
        "b": (None, ["x", "y"], None, None, [10.0, -2.0], None, None, None, None, None),
        "c": (None, None, None, None, [], None, None, None, None, None),  # 1E38 overflows decimal(20,2)
        "d": (None, None, None, None, None, None, None, None, None, None),
    }


def test_attribute_names_match_case_sensitively(items_df):
    # "profile" holds both "age" (42) and "Age" (7); column names themselves follow spark.sql.caseSensitive.
    out = query.project(items_df, {"profile.Age": "bigint"})
    assert {r["pk"]: r["profile.Age"] for r in out.collect()} == {"a": 7, "b": None, "c": None, "d": None}


def test_project_keeps_other_columns_and_replaces_same_name(items_df):
    out = query.project(items_df, {"id": "string"})
    assert out.columns == [*layout.ITEM_COLUMNS, "id"]
    assert sorted(tuple(r) for r in out.select("pk", "id").collect()) == [("a", "a"), ("b", "b"), ("c", "c"),
                                                                        ("d", "d")]
    assert query.project(items_df, {}) is items_df


@pytest.mark.parametrize(("path", "steps"), [
    ("a", ["a"]),
    ("profile.age", ["profile", "age"]),
    ('profile["first.name"]', ["profile", "first.name"]),
    ('["a.b"][2].c', ["a.b", 2, "c"]),
    ("events[0].kind", ["events", 0, "kind"]),
    ("with space.имя", ["with space", "имя"]),
    ('m["q\\"uote"]', ["m", 'q"uote']),
])
def test_parse_path(path, steps):
    assert query.parse_path(path) == steps


@pytest.mark.parametrize("path", ["", ".a", "a.", "a..b", "[0]", "a[x]", 'a["b"', "a[-1]", "a]"])
def test_parse_path_rejects(path):
    with pytest.raises(UsageError):
        query.parse_path(path)


def test_unsupported_type(items_df):
    with pytest.raises(UsageError, match=r"profile: type map<string,string> is not supported"):
        query.project(items_df, {"profile": "map<string,string>"})
