"""The item codec: exact round trips of every value DynamoDB accepts, canonical text, sizes, and precise errors.

Oracles here are independent of the codec: Python's Decimal (exact construction, a wide context) for numbers, and
json.dumps over a hand-built base64 form for the canonical text.
"""
from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import json
import random
from typing import Any, Dict, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddbvault import codec
from ddbvault.codec import ItemCodecError
from ddbvault.errors import DdbVaultError
from ddbvault.vault import integrity, layout

WIDE = decimal.Context(prec=400, Emax=10**6, Emin=-(10**6))


def oracle_number(text: str) -> str:
    """Plain-notation canonical text computed with Decimal (exact, not the codec's string arithmetic)."""
    d = decimal.Decimal(text)
    if d == 0:
        return "0"
    return format(d.normalize(WIDE), "f")


# ---------------------------------------------------------------------------------------------------------------
# Strategies: (input value, expected low-level value) pairs


@st.composite
def numbers(draw) -> Tuple[str, str]:
    """(some valid spelling of a DynamoDB number, its canonical text)."""
    if draw(st.integers(0, 15)) == 0:
        spelled = draw(st.sampled_from(["0", "-0", "0.000", "+0", "0e99", "-0.0E-999", ".0", "0."]))
        return spelled, "0"
    n = draw(st.sampled_from([1, 2, 3, 5, 10, 20, 37, 38]) | st.integers(1, 38))
    digits = [draw(st.sampled_from("123456789"))]
    if n > 1:
        digits += draw(st.lists(st.sampled_from("0123456789"), min_size=n - 2, max_size=n - 2))
        digits.append(draw(st.sampled_from("123456789")))
    sig = "".join(digits)
    magnitude = draw(st.sampled_from([-130, -129, -1, 0, 1, 37, 38, 124, 125]) | st.integers(-130, 125))
    lead, trail = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    mant = "0" * lead + sig + "0" * trail
    point = draw(st.integers(0, len(mant)))
    exp = magnitude - n + 1 - trail + (len(mant) - point)
    sign = draw(st.sampled_from(["", "-", "+"]))
    whole, frac = mant[:point], mant[point:]
    text = sign + whole
    if frac or draw(st.booleans()):
        text += "." + frac
    if exp or draw(st.booleans()):
        text += draw(st.sampled_from("eE")) + draw(st.sampled_from(["", "+"]) if exp >= 0 else st.just("")) + str(exp)
    if text.lstrip("+-") in ("", "."):
        text = sign + "0" + text.lstrip("+-")
    return text, oracle_number(text)


SPECIAL_STRINGS = ["", "\x00", "a\x00b", "e\u0301", "\U0001F600\U0001F44D\U0001F3FD", "日本語", "\"quote\"\\",
                   "\n\t\r", "\u2028", "\u210c"]
strings = st.sampled_from(SPECIAL_STRINGS) | st.text(max_size=12)
NAMES = ["a", "with space", "a.b", "имя", "x" * 255, "é" * 127 + "x", "[0]", "B", "M", "S", "\"q\"", "emoji\U0001F600"]
names = st.sampled_from(NAMES) | st.text(min_size=1, max_size=8)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


@st.composite
def binaries(draw) -> Tuple[Any, bytes]:
    raw = draw(st.binary(max_size=20))
    form = draw(st.sampled_from(["bytes", "bytearray", "b64"]))
    return {"bytes": raw, "bytearray": bytearray(raw), "b64": b64(raw)}[form], raw


def scalar_values():
    return st.one_of(
        strings.map(lambda s: ({"S": s}, {"S": s})),
        numbers().map(lambda p: ({"N": p[0]}, {"N": p[1]})),
        binaries().map(lambda p: ({"B": p[0]}, {"B": p[1]})),
        st.booleans().map(lambda b: ({"BOOL": b}, {"BOOL": b})),
        st.just(({"NULL": True}, {"NULL": True})),
        st.lists(strings, min_size=1, max_size=5, unique=True).flatmap(
            lambda ss: st.permutations(ss).map(lambda p: ({"SS": list(p)}, {"SS": sorted(ss)}))),
        st.lists(numbers(), min_size=1, max_size=5, unique_by=lambda p: p[1]).flatmap(
            lambda ns: st.permutations(ns).map(
                lambda p: ({"NS": [x[0] for x in p]}, {"NS": sorted(x[1] for x in ns)}))),
        st.lists(binaries(), min_size=1, max_size=4, unique_by=lambda p: p[1]).map(
            lambda bs: ({"BS": [x[0] for x in bs]}, {"BS": sorted((x[1] for x in bs), key=b64)})),
    )


def extend(children):
    return st.one_of(
        st.lists(st.tuples(names, children), max_size=4, unique_by=lambda kv: kv[0]).map(
            lambda kvs: ({"M": {k: v[0] for k, v in kvs}}, {"M": {k: v[1] for k, v in kvs}})),
        st.lists(children, max_size=4).map(
            lambda vs: ({"L": [v[0] for v in vs]}, {"L": [v[1] for v in vs]})),
    )


values = st.recursive(scalar_values(), extend, max_leaves=12)
items = st.lists(st.tuples(names, values), min_size=1, max_size=6, unique_by=lambda kv: kv[0]).map(
    lambda kvs: ({k: v[0] for k, v in kvs}, {k: v[1] for k, v in kvs}))


def to_text_form(v: Any) -> Any:
    """The expected low-level value with binaries as base64: what the canonical text must spell."""
    if isinstance(v, dict):
        return {k: to_text_form(x) for k, x in v.items()}
    if isinstance(v, list):
        return [to_text_form(x) for x in v]
    if isinstance(v, bytes):
        return b64(v)
    return v


def expected_text(expected_item: Dict[str, Any]) -> str:
    return json.dumps(to_text_form(expected_item), ensure_ascii=False, separators=(",", ":"), sort_keys=True)


# ---------------------------------------------------------------------------------------------------------------
# Properties

FAST = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ITEMS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(numbers())
def test_normalize_number_matches_decimal_oracle(pair):
    text, canonical = pair
    assert codec.normalize_number(text) == canonical
    assert codec.normalize_number(canonical) == canonical
    assert codec._plain_number_size(text) in (0, codec._number_size(canonical))  # the hot path's shortcut agrees
    assert codec.item_size({"n": {"N": text}}) == 1 + codec._number_size(canonical)


@ITEMS
@given(items)
def test_round_trip_is_exact_and_canonical(pair):
    given_item, expected = pair
    text = codec.encode_item(given_item)
    assert text == expected_text(expected)
    decoded = codec.decode_item(text)
    assert decoded == expected
    assert codec.encode_item(decoded) == text          # bytes form gives the same text as any input form
    assert codec.encode_item(json.loads(text)) == text  # so does the base64 form
    size = codec.item_size(given_item)
    keys = [(name, v) for name, v in to_text_form(expected).items()
            if next(iter(v)) in ("S", "N", "B") and next(iter(v.values())) != ""]
    if keys:
        (pk_name, pk_value), range_key = keys[0], (keys[1:] or [(None, None)])[0]
        record = codec.to_vault_record(given_item, pk_name, range_key[0])
        sk = None if range_key[1] is None else next(iter(range_key[1].values()))
        assert record == (next(iter(pk_value.values())), sk, text, size)


# ---------------------------------------------------------------------------------------------------------------
# Numbers, explicitly

@pytest.mark.parametrize(("given_text", "canonical"), [
    ("1.50", "1.5"), ("-0", "0"), ("0.0", "0"), ("1e2", "100"), ("1E+2", "100"), ("100", "100"), ("0100", "100"),
    ("-1.0e-2", "-0.01"), (".5", "0.5"), ("5.", "5"), ("+7", "7"), ("12.3400e1", "123.4"),
    ("1" + "0" * 38, "1" + "0" * 38),                                   # 10**38: boto3's deserializer raises
    ("9" * 38, "9" * 38),
    ("9." + "9" * 37 + "E+125", "9" * 38 + "0" * 88),                   # the largest magnitude
    ("-9." + "9" * 37 + "E+125", "-" + "9" * 38 + "0" * 88),
    ("1E-130", "0." + "0" * 129 + "1"),                                 # the smallest
    ("-1E-130", "-0." + "0" * 129 + "1"),
    ("1.234567890123456789012345678901234567E-93", "0." + "0" * 92 + "1234567890123456789012345678901234567"),
    ("1E+125", "1" + "0" * 125),
    ("0.000000000000000000000000000000000000000000000000000000000000000012300", "0." + "0" * 64 + "123"),
    ("0e999999999999", "0"),
])
def test_normalize_number_cases(given_text, canonical):
    assert codec.normalize_number(given_text) == canonical
    assert oracle_number(given_text) == canonical


def test_equal_numbers_give_one_canonical_key():
    assert {codec.key_value({"N": t}) for t in ["1.5", "1.50", "15e-1", "0.15E1", "+1.5", "1.500000"]} == {"1.5"}


@pytest.mark.parametrize(("bad", "why"), [
    ("", "not a number"), (".", "not a number"), ("e5", "not a number"), ("1e", "not a number"),
    (" 1", "not a number"), ("1 ", "not a number"), ("1_000", "not a number"), ("\u0661", "not a number"),
    ("NaN", "not a number"), ("Infinity", "not a number"), ("0x10", "not a number"), ("1.2.3", "not a number"),
    ("--1", "not a number"), ("1" * 39, "39 significant digits"), ("1." + "1" * 38, "39 significant digits"),
    ("1E+126", "overflow"), ("10E+125", "overflow"), ("-1E+126", "overflow"), ("1E-131", "underflow"),
    ("0.1E-130", "underflow"), ("1e99999999999999", "overflow"), ("1e-99999999999999", "underflow"),
])
def test_invalid_numbers_name_the_path(bad, why):
    with pytest.raises(ItemCodecError) as err:
        codec.normalize_number(bad, "profile.scores[2]")
    assert why in str(err.value)
    assert err.value.path == "profile.scores[2]"
    assert "profile.scores[2]" in str(err.value)
    assert isinstance(err.value, ValueError) and isinstance(err.value, DdbVaultError)


def test_number_must_be_a_string():
    with pytest.raises(ItemCodecError, match=r"attribute n: a number travels as a string, got int"):
        codec.encode_item({"n": {"N": 5}})


# ---------------------------------------------------------------------------------------------------------------
# Edge values, explicitly

def test_edge_values_round_trip():
    deep: Dict[str, Any] = {"S": "bottom"}
    for i in range(31):  # 31 wrappers above a value: 32 levels, the service's limit
        deep = {"M": {"k": deep}} if i % 2 else {"L": [deep]}
    item = {
        "pk": {"S": "id-1"},
        "empty_s": {"S": ""},
        "empty_b": {"B": b""},
        "empty_b64": {"B": ""},
        "empty_l": {"L": []},
        "empty_m": {"M": {}},
        "nul": {"S": "a\x00b"},
        "combining": {"S": "e\u0301"},
        "emoji": {"S": "\U0001F600 \U0001F44D\U0001F3FD"},
        "with space": {"S": "x"},
        "a.b": {"N": "1.50"},
        "имя": {"BOOL": False},
        "x" * 255: {"NULL": True},
        "ss": {"SS": ["b", "a", "", "\U0001F600", "Z"]},
        "ns": {"NS": ["10", "9", "-1", "1E+2", "0.5"]},
        "bs": {"BS": [b"\xff", "AA==", b""]},
        "deep": deep,
        "big": {"N": "1" + "0" * 38},
        "tiny": {"N": "-1E-130"},
    }
    text = codec.encode_item(item)
    decoded = codec.decode_item(text)
    assert decoded["empty_b"] == {"B": b""} and decoded["empty_b64"] == {"B": b""}
    assert decoded["a.b"] == {"N": "1.5"}
    assert decoded["ss"] == {"SS": ["", "Z", "a", "b", "\U0001F600"]}
    assert decoded["ns"] == {"NS": ["-1", "0.5", "10", "100", "9"]}  # sorted by canonical text
    assert decoded["bs"] == {"BS": [b"", b"\xff", b"\x00"]}          # by base64 text: "", "/w==", "AA=="
    assert decoded["deep"] == deep
    assert decoded["big"] == {"N": "1" + "0" * 38}
    assert decoded["tiny"] == {"N": "-0." + "0" * 129 + "1"}
    assert codec.encode_item(decoded) == text
    assert '"\\u0000"' not in text and "a\\u0000b" in text           # NUL is escaped, the rest stays literal
    assert "\U0001F600" in text and "имя" in text
    assert text.startswith('{"a.b":{"N":"1.5"},"big":')              # keys sorted, compact


def test_canonical_text_is_byte_identical_for_equal_items():
    one = {"b": {"M": {"y": {"N": "1.50"}, "x": {"SS": ["q", "p"]}}}, "a": {"B": b"\x01\x02"}}
    two = {"a": {"B": "AQI="}, "b": {"M": {"x": {"SS": ["p", "q"]}, "y": {"N": "15E-1"}}}}
    assert codec.encode_item(one) == codec.encode_item(two) == \
        '{"a":{"B":"AQI="},"b":{"M":{"x":{"SS":["p","q"]},"y":{"N":"1.5"}}}}'
    text = codec.encode_item(one)
    assert codec.item_hash(text) == hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_decode_gives_the_low_level_client_form():
    text = codec.encode_item({"k": {"S": "1"}, "B": {"M": {"B": {"B": "AQ=="}, "BS": {"BS": ["Ag=="]}}},
                              "n": {"N": "007"}, "s": {"NS": ["2", "1"]}})
    assert codec.decode_item(text) == {
        "k": {"S": "1"}, "B": {"M": {"B": {"B": b"\x01"}, "BS": {"BS": [b"\x02"]}}},
        "n": {"N": "7"}, "s": {"NS": ["1", "2"]}}


def test_bytes_and_base64_inputs_give_the_same_text():
    raw = bytes(range(256))
    texts = {codec.encode_item({"b": {"B": form}, "bs": {"BS": [form, b"x"]}})
             for form in (raw, bytearray(raw), memoryview(raw), b64(raw))}
    assert len(texts) == 1


def test_item_of_400_kb_round_trips():
    item = {"pk": {"S": "big"}, "blob": {"B": bytes(range(256)) * 800},
            "text": {"S": "é" * 100_000}, "list": {"L": [{"N": str(i)} for i in 1000 * [7]]}}
    pk, sk, text, size = codec.to_vault_record(item, "pk", None)
    assert (pk, sk) == ("big", None)
    assert size == (2 + 3) + (4 + 204_800) + (4 + 200_000) + (4 + 3 + 1000 * (1 + 2))
    assert codec.decode_item(text) == item


# ---------------------------------------------------------------------------------------------------------------
# Sizes (DG "DynamoDB item sizes and formats")

@pytest.mark.parametrize(("item", "size"), [
    ({"a": {"S": "héllo"}}, 1 + 6),
    ({"a": {"S": ""}}, 1),
    ({"ab": {"B": b"\x00\x01\x02"}}, 2 + 3),
    ({"ab": {"B": "AAEC"}}, 2 + 3),
    ({"n": {"N": "0"}}, 1 + 2),
    ({"n": {"N": "7"}}, 1 + 2),
    ({"n": {"N": "12"}}, 1 + 2),
    ({"n": {"N": "123"}}, 1 + 3),
    ({"n": {"N": "-1.2000"}}, 1 + 2),          # 2 significant digits: zeros trimmed
    ({"n": {"N": "-1.2300"}}, 1 + 3),          # 3
    ({"n": {"N": "1000000"}}, 1 + 2),          # 1 significant digit
    ({"n": {"N": "100.001"}}, 1 + 4),          # 6 significant digits
    ({"n": {"N": "9" * 38}}, 1 + 20),
    ({"n": {"N": "0.000123"}}, 1 + 3),
    ({"t": {"BOOL": True}, "u": {"NULL": True}}, 2 + 2),
    ({"m": {"M": {}}}, 1 + 3),
    ({"l": {"L": []}}, 1 + 3),
    ({"l": {"L": [{"S": "ab"}, {"N": "1"}]}}, 1 + 3 + (1 + 2) + (1 + 2)),
    ({"m": {"M": {"kk": {"S": "ab"}, "é": {"NULL": True}}}}, 1 + 3 + (1 + 2 + 2) + (1 + 2 + 1)),
    ({"ss": {"SS": ["a", "bc", ""]}}, 2 + 3),
    ({"ns": {"NS": ["1", "123"]}}, 2 + 2 + 3),
    ({"bs": {"BS": [b"\x00", b"\x00\x01"]}}, 2 + 3),
    ({"名前": {"S": "x"}}, 6 + 1),
])
def test_item_size(item, size):
    assert codec.item_size(item) == size
    assert codec.to_vault_record({**item, "pk": {"S": "k"}}, "pk", None)[3] == size + 3


# ---------------------------------------------------------------------------------------------------------------
# Keys

def test_key_value():
    assert codec.key_value({"S": "a b"}) == "a b"
    assert codec.key_value({"N": "-0010.50"}) == "-10.5"
    assert codec.key_value({"B": b"\xfb\xff"}) == "+/8="
    assert codec.key_value({"B": "+/8="}) == "+/8="
    with pytest.raises(ItemCodecError, match=r"attribute pk: a key is an S, N or B scalar, got SS"):
        codec.key_value({"SS": ["a"]}, "pk")
    with pytest.raises(ItemCodecError, match=r"attribute pk: empty S key value"):
        codec.key_value({"S": ""}, "pk")
    with pytest.raises(ItemCodecError, match=r"attribute pk: not a number"):
        codec.key_value({"N": "x"}, "pk")


def test_to_vault_record_keys():
    item = {"id": {"B": b"\x00\x01"}, "ts": {"N": "1.0e3"}, "v": {"S": "x"}}
    assert codec.to_vault_record(item, "id", "ts") == (
        "AAE=", "1000", '{"id":{"B":"AAE="},"ts":{"N":"1000"},"v":{"S":"x"}}', 2 + 2 + 2 + 2 + 1 + 1)
    with pytest.raises(ItemCodecError, match=r'attribute \["sort.key"\]: key attribute is missing'):
        codec.to_vault_record(item, "id", "sort.key")
    with pytest.raises(ItemCodecError, match=r"attribute nope: key attribute is missing"):
        codec.to_vault_record(item, "nope", None)
    with pytest.raises(ItemCodecError, match=r"attribute v: a key is an S, N or B scalar, got L"):
        codec.to_vault_record({"v": {"L": []}}, "v", None)


# ---------------------------------------------------------------------------------------------------------------
# Invalid items: the error names the attribute path

def nest(depth: int) -> Dict[str, Any]:
    v: Dict[str, Any] = {"S": "x"}
    for _ in range(depth - 1):
        v = {"M": {"k": v}}
    return v


INVALID_ITEMS = [
    ({"profile": {"M": {"tags": {"L": [{"S": "a"}, {"S": "b"}, {"S": "c"}, {"SS": []}]}}}},
     "profile.tags[3]", "empty SS set"),
    ({"a": {"NS": []}}, "a", "empty NS set"),
    ({"a": {"BS": []}}, "a", "empty BS set"),
    ({"a": {"SS": ["x", "x"]}}, "a", "holds 'x' twice"),
    ({"a": {"NS": ["1.5", "1.50"]}}, "a", "holds '1.5' twice"),
    ({"a": {"BS": [b"\x01", "AQ=="]}}, "a", "holds 'AQ==' twice"),
    ({"a": {"SS": "abc"}}, "a", "SS takes a list"),
    ({"a": {"SS": ["x", 1]}}, "a", "SS member 1 is int"),
    ({"m": {"M": {"a.b": {"N": "1" * 39}}}}, 'm["a.b"]', "39 significant digits"),
    ({"with space": {"N": "1E+126"}}, "with space", "overflow"),
    ({"m": {"M": {"x": {"L": [{"N": "1,5"}]}}}}, "m.x[0]", "not a number"),
    ({"a": {"NS": ["1", "x"]}}, "a", "not a number"),
    ({"a": {"Q": "x"}}, "a", "unknown type tag 'Q'"),
    ({"a": {"s": "x"}}, "a", "unknown type tag 's'"),
    ({"a": {"B": "not base64!"}}, "a", "bad base64"),
    ({"a": {"B": "QQ"}}, "a", "bad base64"),
    ({"a": {"B": "QR=="}}, "a", "non-canonical base64"),
    ({"a": {"B": "QQ==\n"}}, "a", "bad base64"),
    ({"a": {"BS": ["QQ==", "*"]}}, "a", "bad base64"),
    ({"a": {"B": 5}}, "a", "a binary is bytes or a base64 string"),
    ({"a": {"S": "x", "N": "1"}}, "a", "more than one type tag"),
    ({"a": {}}, "a", "no type tag"),
    ({"a": "x"}, "a", "an attribute value is a mapping"),
    ({"l": {"L": [{"S": "ok"}, ["x"]]}}, "l[1]", "an attribute value is a mapping"),
    ({"a": {"NULL": False}}, "a", "NULL holds False"),
    ({"a": {"NULL": "true"}}, "a", "NULL holds 'true'"),
    ({"a": {"BOOL": "true"}}, "a", "BOOL holds 'true'"),
    ({"a": {"BOOL": 1}}, "a", "BOOL holds 1"),
    ({"a": {"S": 1}}, "a", "S holds int"),
    ({"a": {"S": "\ud800"}}, "a", "lone surrogate"),
    ({"a": {"M": []}}, "a", "M holds list"),
    ({"a": {"L": {}}}, "a", "L holds dict"),
    ({"a": {"M": {1: {"S": "x"}}}}, "a.1", "map key 1 is not a string"),
    ({" a": {"M": {"": {"N": "x"}, "b c": {"S": ""}}}}, '[" a"][""]', "not a number"),
    ({"deep": nest(33)}, "deep" + ".k" * 31, "nesting deeper than 32 levels"),
    ({"d": {"L": [nest(32)]}}, "d[0]" + ".k" * 30, "nesting deeper than 32 levels"),
    ({"é.\"x\"": {"M": {"[0]": {"S": 1}}}}, '["é.\\"x\\""]["[0]"]', "S holds int"),
]


@pytest.mark.parametrize(("item", "path", "why"), INVALID_ITEMS)
def test_invalid_items_name_the_path(item, path, why):
    with pytest.raises(ItemCodecError) as err:
        codec.encode_item(item)
    assert err.value.path == path
    assert why in err.value.reason
    assert str(err.value).startswith(f"invalid DynamoDB attribute {path}: ")


def test_nesting_at_the_limit_is_fine():
    assert codec.decode_item(codec.encode_item({"deep": nest(32)})) == {"deep": nest(32)}


def test_non_mapping_item():
    with pytest.raises(ItemCodecError, match="an item is a mapping"):
        codec.encode_item([("a", {"S": "x"})])


# ---------------------------------------------------------------------------------------------------------------
# Through a real Delta table

def sample_items(count: int, seed: int) -> List[Dict[str, Any]]:
    """Deterministic, varied items with an S hash key ``pk`` and an N range key ``sk``."""
    rnd = random.Random(seed)
    pool = [*SPECIAL_STRINGS, "plain", "k.e.y", "\U0001F600"]
    out = []
    for i in range(count):
        item: Dict[str, Any] = {
            "pk": {"S": f"user#{i % 7}:{rnd.choice(pool)}"},
            "sk": {"N": rnd.choice(["1.50", "15e-1", "1" + "0" * 38, "-1E-130", "9.9E+125", "0", str(i)])
                   if i % 3 else str(i)},
            rnd.choice(NAMES): {"S": rnd.choice(pool)},
            "n": {"N": str(rnd.randint(-10**40, 10**40) // 100)},
            "b": {"B": bytes(rnd.randrange(256) for _ in range(rnd.randrange(5)))},
            "m": {"M": {"x y": {"L": [{"NULL": True}, {"BOOL": bool(i % 2)}, {"SS": ["b", "a"]}]}, "e": {"M": {}}}},
            "bs": {"BS": [b"\x00", "AQ==", b"\xff\xfe"]},
        }
        out.append(item)
    return out


def test_round_trip_through_delta(spark, tmp_path):
    items = sample_items(60, seed=7)
    # Keys must be unique per table: suffix the hash key with the index.
    for i, item in enumerate(items):
        item["pk"] = {"S": item["pk"]["S"] + f"#{i}"}
    items.append({"pk": {"S": "deep"}, "sk": {"N": "1"}, "deep": nest(32), "big": {"S": "é" * 150_000}})
    when = dt.datetime(2024, 5, 1, 12, 0, 0)
    rows = []
    expected = {}
    for item in items:
        pk, sk, text, size = codec.to_vault_record(item, "pk", "sk")
        rows.append((pk, sk, text, size, layout.SOURCE_EXPORT, when, None, "t", integrity.item_hash(text)))
        expected[(pk, sk)] = (codec.decode_item(codec.encode_item(item)), size, text)
    path = str(tmp_path / "items")
    spark.createDataFrame(rows, layout.items_schema()).write.format("delta").save(path)

    back = spark.read.format("delta").load(path).collect()
    got = {(r[layout.PK], r[layout.SK]): (codec.decode_item(r[layout.ITEM]), r[layout.ITEM_SIZE], r[layout.ITEM])
           for r in back}
    assert len(back) == len(items)
    assert got == expected
    # and the decoded items equal the inputs with numbers canonical, binaries as bytes
    assert got[("deep", "1")][0] == {"pk": {"S": "deep"}, "sk": {"N": "1"}, "deep": nest(32),
                                     "big": {"S": "é" * 150_000}}
    assert {r[layout.SOURCE] for r in back} == {"export"} and {r[layout.RUN_ID] for r in back} == {"t"}
