"""The JVM codec (jvm/src/ddbvault/jvm, in ddbvault-jvm.jar) against the Python codec, its reference: the same key
strings, canonical text, size and digest share for every valid item, and a refusal naming the same attribute for
every invalid one. The export commits with it; the Python codec stays the definition of the vault's text."""
from __future__ import annotations

import base64
import json
from typing import Any, Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from py4j.protocol import Py4JJavaError
from pyspark.sql import functions as F
from test_codec import INVALID_ITEMS, items, nest

from ddbvault import codec
from ddbvault.codec import ItemCodecError
from ddbvault.vault import integrity, staging


@pytest.fixture(scope="module")
def jvm(spark):
    assert staging.register_jvm_codec(spark), "ddbvault-jvm.jar is not on the test session's classpath (make jvm)"
    return spark


def wire(v: Any) -> Any:
    """An item as DynamoDB's JSON carries it: binaries as base64 text."""
    if isinstance(v, dict):
        return {k: wire(x) for k, x in v.items()}
    if isinstance(v, list):
        return [wire(x) for x in v]
    if isinstance(v, (bytes, bytearray)):
        return base64.b64encode(bytes(v)).decode("ascii")
    return v


def jvm_rows(spark, pages: List[str], hash_key: str, range_key: Optional[str]) -> List[Tuple]:
    frame = spark.createDataFrame([(p,) for p in pages], "value string")
    rows = F.call_udf(staging.JVM_CODEC_FUNCTION, F.col("value"), F.lit(hash_key), F.lit(range_key).cast("string"))
    return [tuple(r) for r in frame.select(F.explode(rows).alias("r")).select("r.*").collect()]


def python_row(item: Dict[str, Any], hash_key: str, range_key: Optional[str]) -> Tuple:
    pk, sk, text, size = codec.to_vault_record(item, hash_key, range_key)
    return pk, sk, text, size, integrity.item_hash(text)


def page(batch: List[Dict[str, Any]], ascii_only: bool) -> str:
    # Both spellings DynamoDB's JSON may take: non-ASCII as \u escapes (surrogate pairs too) or as it is.
    return json.dumps(batch, ensure_ascii=ascii_only)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.lists(items, min_size=1, max_size=20), st.booleans())
def test_every_valid_item_gives_the_python_codecs_row(jvm, pairs, ascii_only):
    batch = []
    for i, (given_item, _) in enumerate(pairs):
        item = wire(given_item)
        item["pk"] = {"S": f"k{i}"}
        item["sk"] = {"N": f"{i}.50e1"}  # a range key that is not canonical as sent
        batch.append(item)
    expected = [python_row(item, "pk", "sk") for item in batch]
    assert jvm_rows(jvm, [page(batch, ascii_only), "[]"], "pk", "sk") == expected


@pytest.mark.smoke
def test_keys_numbers_sets_and_strings_of_every_kind(jvm):
    """Hand-picked: every key type, numbers that need normalising, sets in every order, the JSON escapes, code
    point order above U+FFFF (where Java's String order differs), depth 32 and a 400 KB string."""
    items = [
        {"h": {"N": "-0012.3400e2"}, "s": {"S": "\U0001F600 \uffff \ue000 \x00\x1f\x7f\u2028\"\\/"},
         "ss": {"SS": ["\uffff", "\U0001F600", "\ue000", "a", ""]}, "ns": {"NS": ["1e2", "-0.5", "10", "1E-130"]},
         "bs": {"BS": ["AQ==", "AA==", "/w=="]}, "\U0001F600": {"NULL": True}, "\uffff": {"BOOL": False},
         "m": {"M": {"z": {"L": []}, "a": {"M": {}}, "\t": {"N": "0.000"}}}},
        {"h": {"N": "1E+125"}, "deep": nest(32), "big": {"S": "é" * 200_000}, "b": {"B": ""}},
    ]
    for hash_key, range_key in (("h", None), ("s", "h"), ("b", None)):
        batch = items[:1] if hash_key == "s" else items[1:] if hash_key == "b" else items
        if hash_key == "b":
            batch = [dict(batch[0], b={"B": "3q2+7w=="})]
        expected = [python_row(item, hash_key, range_key) for item in batch]
        assert jvm_rows(jvm, [page(batch, True)], hash_key, range_key) == expected
        assert jvm_rows(jvm, [page(batch, False)], hash_key, range_key) == expected


def refusal(spark, item: Any, hash_key: str = "a") -> Tuple[str, str]:
    with pytest.raises(Py4JJavaError) as err:
        jvm_rows(spark, [json.dumps([item])], hash_key, None)
    found = staging.codec_failure(err.value)
    assert found is not None, str(err.value)[:500]
    return found


def json_form(item: Any) -> Any:
    return json.loads(json.dumps(wire(item)))


@pytest.mark.parametrize("case", [c for c in INVALID_ITEMS if json_form(c[0]) == wire(c[0])],
                         ids=lambda c: c[2])
def test_every_invalid_item_is_refused_at_the_same_attribute(jvm, case):
    item, path, _ = case
    with pytest.raises(ItemCodecError) as python_err:
        codec.to_vault_record(item, "a", None)
    assert python_err.value.path == path
    assert refusal(jvm, json_form(item))[0] == path


@pytest.mark.parametrize(("item", "hash_key", "path", "why"), [
    ({"b": {"S": "x"}}, "a", "a", "key attribute is missing"),
    ({"a": {"SS": ["x"]}}, "a", "a", "a key is an S, N or B scalar, got SS"),
    ({"a": {"S": ""}}, "a", "a", "empty S key value"),
    ({"a": {"B": ""}}, "a", "a", "empty B key value"),
    ({"a": {"N": "1"}, "n": {"N": "1" * 39}}, "a", "n", "39 significant digits"),
    ({"a": {"N": "1E+126"}}, "a", "a", "overflow"),
    ({"a": {"N": "1E-131"}}, "a", "a", "underflow"),
    ({"a": {"N": "1E+9999999999"}}, "a", "a", "overflow"),
    ({"a": {"N": "1", "S": "x"}}, "a", "a", "more than one type tag"),
    ([{"a": {"S": "x"}}], "a", "", "an item is a mapping"),
])
def test_refusals_say_what_is_wrong(jvm, item, hash_key, path, why):
    found_path, reason = refusal(jvm, item, hash_key)
    assert (found_path, why in reason) == (path, True), reason


def test_a_page_that_is_not_json_is_refused(jvm):
    for bad in ('[{"a":{"S":"x"}}', '[{"a":{"S":"x"}}] trailing', '{"a":{"S":"x"}}'):
        with pytest.raises(Py4JJavaError) as err:
            jvm_rows(jvm, [bad], "a", None)
        path, reason = staging.codec_failure(err.value)
        assert path == "" and "a staged page is not" in reason
