"""The export's fast path: Scan items taken as DynamoDB's own JSON give the same vault text as botocore's."""
from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest

from ddbvault import aws, codec
from ddbvault.dynamo import scan


def test_raw_json_items_encode_exactly_like_botocore_items(tables):
    name = tables.create("pk", "S", "sk", "N")
    items = [{"pk": {"S": f"k{i % 7}"}, "sk": {"N": str(i)}, "b": {"B": bytes([i % 256, 0, 255])},
              "bs": {"BS": [b"\x00", bytes([i % 255 + 1])]},
              "m": {"M": {"deep": {"L": [{"B": b"\xff\xfe"}, {"NULL": True}, {"N": "1.50"}]}}},
              "s": {"S": ""}, "ss": {"SS": ["z", "a"]}} for i in range(60)]
    tables.put_all(name, items)

    def texts(raw):
        out = []
        for _, page in scan.scan_segments(name, [0, 1, 2], 3, threads=3, raw_json=raw, page_size=7):
            out.extend(codec.encode_item(item) for item in page.items)
        return sorted(out)

    expected = sorted(codec.encode_item(item) for item in items)
    assert texts(raw=True) == expected
    assert texts(raw=False) == expected
    assert any('"B":"//4="' in text for text in expected)  # a nested binary really travelled as base64


def test_raw_bytes_pages_hold_the_items_json_and_their_count(tables):
    name = tables.create("pk", "S")
    items = [{"pk": {"S": f"k{i}"}, "b": {"B": bytes([i, 0, 255])}, "n": {"N": "1.50"}, "u": {"S": "é\U0001F600"}}
             for i in range(40)]
    tables.put_all(name, items)
    texts, counts, keys = [], 0, []
    for _, page in scan.scan_segments(name, [0, 1], 2, threads=2, raw_bytes=True, page_size=6):
        parsed = json.loads(page.items_json)
        assert (page.items, page.count) == ([], len(parsed))
        counts += page.count
        texts.extend(codec.encode_item(item) for item in parsed)
        keys.append(page.last_key)
    assert counts == len(items)
    assert sorted(texts) == sorted(codec.encode_item(item) for item in items)
    assert {"pk"} == {k for key in keys if key for k in key}  # LastEvaluatedKey came through the split


def _body(items: List[Any], *, before: Dict[str, Any], after: Dict[str, Any]) -> bytes:
    parts = [json.dumps(k) + ":" + json.dumps(v, separators=(",", ":")) for k, v in before.items()]
    parts.append('"Items":' + json.dumps(items, separators=(",", ":"), ensure_ascii=False))
    parts += [json.dumps(k) + ":" + json.dumps(v, separators=(",", ":")) for k, v in after.items()]
    return ("{" + ",".join(parts) + "}").encode("utf-8")


TRICKY_ITEMS = [
    {"Items": {"L": [{"S": "]"}]}, "LastEvaluatedKey": {"M": {"Items": {"S": "\"Items\":["}}}},
    {"pk": {"S": "],\"ScannedCount\":1}"}, "x": {"SS": ["]", "]]"]}},
]


@pytest.mark.parametrize(("before", "after"), [
    ({"ConsumedCapacity": {"TableName": "Items", "CapacityUnits": 1.5}, "Count": 2},
     {"LastEvaluatedKey": {"pk": {"S": "a],\"Count\":9}"}}, "ScannedCount": 2}),
    ({"Count": 2}, {"LastEvaluatedKey": {"pk": {"S": "]"}}}),
    ({}, {"Count": 2, "ScannedCount": 2}),
    ({"LastEvaluatedKey": {"pk": {"S": "x]"}}, "Count": 2}, {}),
    ({"Count": 2, "LastEvaluatedKey": {"pk": {"S": "]" * 70}}}, {"ScannedCount": 2}),
])
def test_split_member_finds_the_items_array_whatever_surrounds_it(before, after):
    for items in (TRICKY_ITEMS, []):
        body = _body(items, before=before, after=after)
        found, rest = aws.split_member(body, "Items")
        assert json.loads(found) == items
        assert json.loads(rest) == dict(before, Items=[], **after)


def test_split_member_gives_up_on_other_shapes_and_the_handler_still_hands_bytes_over():
    spaced = b'{"Count": 1, "Items": [{"pk": {"S": "x"}}], "ScannedCount": 1}'
    many = _body([{"pk": {"S": "y"}}], before={"Count": 1}, after={"LastEvaluatedKey": {"pk": {"S": "]" * 70}}})
    assert aws.split_member(b'{"Count":0}', "Items") is None
    for body in (spaced, many):
        assert aws.split_member(body, "Items") is None
        response: Dict[str, Any] = {"status_code": 200, "body": body}
        custom: Dict[str, Any] = {}
        aws.RawBytes("Items")(response, custom)
        assert json.loads(custom["Items"]) == json.loads(body)["Items"]
        assert json.loads(response["body"]) == {k: v for k, v in json.loads(body).items() if k != "Items"}


def test_raw_bytes_refuses_what_is_not_utf8():
    response = {"status_code": 200, "body": b'{"Count":1,"Items":[{"pk":{"S":"\xff"}}],"ScannedCount":1}'}
    with pytest.raises(UnicodeDecodeError):
        aws.RawBytes("Items")(response, {})
