"""The export's fast path: Scan items taken as DynamoDB's own JSON give the same vault text as botocore's."""
from __future__ import annotations

from ddbvault import codec
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
