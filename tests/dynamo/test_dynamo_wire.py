"""The restore's wire path: BatchWriteItem bodies built from the vault's item text equal botocore's, and the writer
keeps every guarantee (unprocessed items re-sent, throttles, keys of unwritten items) with them."""
from __future__ import annotations

import json

import pytest

from ddbvault import aws, codec
from ddbvault.dynamo import wire
from ddbvault.dynamo.batch_write import write_items
from ddbvault.dynamo.retry import RetryPolicy
from ddbvault.errors import UnprocessedItemsError
from servers import REGION_A

FAST = RetryPolicy(max_attempts=12, base_delay_s=0.001, max_delay_s=0.01)


def every_type(i):
    """An item of every attribute type DynamoDB has, the edge values included."""
    return {
        "pk": {"S": f"k{i}"}, "sk": {"N": str(i)},
        "s": {"S": "plain"}, "s_empty": {"S": ""},
        "n38": {"N": "1234567890123456789012345678901234567." + str(i % 10)},
        "n_big": {"N": "9" * 38 + "0" * 88}, "n_tiny": {"N": "-0." + "0" * 129 + "1"},
        "b": {"B": bytes([i % 256, 0, 255, 10])}, "b_empty": {"B": b""},
        "ss": {"SS": ["z", "a", "m"]}, "ns": {"NS": ["10", "-1.5", "3"]}, "bs": {"BS": [b"\x00", b"\xff\x01"]},
        "m": {"M": {"deep": {"L": [{"B": b"\xff\xfe"}, {"NULL": True}, {"N": "1.50"},
                                   {"M": {"bin": {"BS": [b"x", b"y"]}}}]}, "e": {"M": {}}}},
        "l": {"L": [{"S": "x"}, {"BOOL": False}, {"L": []}]},
        "null": {"NULL": True}, "t": {"BOOL": True}, "f": {"BOOL": False},
    }


def unicode_item(i):
    return {"pk": {"S": f"ü{i}-\u2603-\U0001f600"}, "sk": {"N": str(i)}, "name with space": {"S": "é\u0000\"\\"},
            "m": {"M": {"ключ": {"S": "значение"}}}}


def wire_records(texts, key_types=("S", "N")):
    out = []
    for text in texts:
        item = codec.decode_item(text)
        key = wire.key_tuple(key_types, (codec.key_value(item["pk"]), codec.key_value(item["sk"])))
        out.append((wire.WireItem(text, key), codec.item_size(item)))
    return out


def capture_bodies(client):
    bodies = []

    def record(request, **_):
        bodies.append(bytes(request.body))

    client.meta.events.register("before-send.dynamodb.BatchWriteItem", record)
    return bodies


@pytest.mark.parametrize("make", [every_type, unicode_item], ids=["every-type", "unicode"])
def test_wire_body_equals_what_botocore_sends(tables, make, monkeypatch):
    name = tables.create("pk", "S", "sk", "N")
    other = tables.create("pk", "S", "sk", "N")
    texts = [codec.encode_item(make(i)) for i in range(30)]
    # The writer's clients are cached per process: these are theirs, in a cache of this test's own (the
    # recording handlers stay off the clients other tests get).
    monkeypatch.setattr(aws, "_clients", {})
    wired = capture_bodies(aws.client("dynamodb", REGION_A, data_plane=True, events=wire.EVENTS))
    stats_wire = write_items(name, wire_records(texts), key_names=("pk", "sk"), region=REGION_A, policy=FAST)
    plain = [(codec.decode_item(t), codec.item_size(codec.decode_item(t))) for t in texts]
    botocore_body = capture_bodies(aws.client("dynamodb", REGION_A, data_plane=True))
    # The botocore path: a client without the wire handlers, as the writer used before the wire path.
    monkeypatch.setattr(wire, "EVENTS", ())
    stats_plain = write_items(other, plain, key_names=("pk", "sk"), region=REGION_A, policy=FAST)

    assert stats_wire.items == stats_plain.items == 30
    assert len(wired) == len(botocore_body) == 2  # 25 + 5, both ways
    for ours, theirs in zip(wired, [b.replace(other.encode(), name.encode()) for b in botocore_body]):
        assert json.loads(ours) == json.loads(theirs)
        # Byte-equal once botocore's spacing and \u escapes are written the compact UTF-8 way, and botocore's
        # own bytes are exactly ours re-serialised its way: same member order, same number and base64 texts.
        assert json.dumps(json.loads(theirs), separators=(",", ":"), ensure_ascii=False).encode("utf-8") == ours
        assert json.dumps(json.loads(ours)).encode("utf-8") == theirs
    if make is every_type:
        assert b'"B":"//4="' in wired[0]  # a nested binary travelled as the vault's base64, untouched
    else:
        assert "ü0-☃".encode() in wired[0] and b"\\u00fc0" in botocore_body[0]  # UTF-8 against \u escapes
    assert sorted(codec.encode_item(i) for i in tables.scan_all(name)) == sorted(texts)
    assert sorted(codec.encode_item(i) for i in tables.scan_all(other)) == sorted(texts)


def test_binary_and_number_keys_match_unprocessed_items(faults, tables):
    name = tables.create("pk", "B", "sk", "N")
    items = [{"pk": {"B": bytes([i % 5, 255])}, "sk": {"N": f"{i}.50"}, "v": {"S": "x" * i}} for i in range(80)]
    texts = [codec.encode_item(i) for i in items]
    records = []
    for text, item in zip(texts, items):
        key = wire.key_tuple(("B", "N"), (codec.key_value(item["pk"]), codec.key_value(item["sk"])))
        records.append((wire.WireItem(text, key), codec.item_size(item)))
    faults.set_rules([{"op": "BatchWriteItem", "fault": "throttle", "first": 2},
                      {"op": "BatchWriteItem", "fault": "unprocessed", "every": 2, "keep": 5}], record=True)
    stats = write_items(name, records, key_names=("pk", "sk"), region=REGION_A, policy=FAST, threads=3)
    injected = [r["injected"] for r in faults.counters()["rules"]]
    assert all(n > 0 for n in injected), injected
    assert stats.items == 80 and stats.unprocessed_retries > 0 and stats.retries > 0
    assert sorted(codec.encode_item(i) for i in tables.scan_all(name)) == sorted(texts)


def test_exhausted_wire_items_are_named(faults, tables):
    name = tables.create("pk", "S", "sk", "N")
    texts = [codec.encode_item({"pk": {"S": f"k{i}"}, "sk": {"N": str(i)}}) for i in range(30)]
    faults.set_rules(["BatchWriteItem:unprocessed:keep=0"])
    policy = RetryPolicy(max_attempts=12, base_delay_s=0.001, max_delay_s=0.01, throttle_s=0.02)
    with pytest.raises(UnprocessedItemsError) as err:
        write_items(name, wire_records(texts), key_names=("pk", "sk"), region=REGION_A, policy=policy)
    assert "25 items did not finish" in str(err.value)
    assert "pk=S:'k0'" in str(err.value)
    assert len(err.value.unprocessed_keys) == 25
    assert tables.scan_all(name) == []


def test_wire_deletes_and_puts_in_one_call(tables):
    name = tables.create("pk", "S", "sk", "N")
    tables.put_all(name, [{"pk": {"S": f"k{i}"}, "sk": {"N": str(i)}, "old": {"BOOL": True}} for i in range(10)])
    records = []
    for i in range(10):
        key = wire.key_tuple(("S", "N"), (f"k{i}", str(i)))
        if i % 2:
            records.append((wire.WireItem(wire.key_text(("pk", "sk"), ("S", "N"), (f"k{i}", str(i))), key, True),
                            100))
        else:
            text = codec.encode_item({"pk": {"S": f"k{i}"}, "sk": {"N": str(i)}, "new": {"N": "1"}})
            records.append((wire.WireItem(text, key), 20))
    stats = write_items(name, records, key_names=("pk", "sk"), region=REGION_A, policy=FAST)
    assert stats.items == 10 and stats.batches == 1
    assert sorted(codec.encode_item(i) for i in tables.scan_all(name)) == sorted(
        codec.encode_item({"pk": {"S": f"k{i}"}, "sk": {"N": str(i)}, "new": {"N": "1"}}) for i in range(0, 10, 2))


def test_the_signature_covers_the_wire_body(tables):
    """The body is put in place before SigV4 signing: the request's signature is the one of the bytes sent
    (moto does not check signatures, so this recomputes it)."""
    import boto3
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    name = tables.create("pk", "S", "sk", "N")
    texts = [codec.encode_item(every_type(i)) for i in range(3)]
    sent = []
    client = aws.client("dynamodb", REGION_A, data_plane=True, events=wire.EVENTS)
    client.meta.events.register("before-send.dynamodb.BatchWriteItem", lambda request, **_: sent.append(request))
    write_items(name, wire_records(texts), key_names=("pk", "sk"), region=REGION_A, policy=FAST)

    (request,) = sent
    assert request.body == wire.request_body(name, [r[0] for r in wire_records(texts)])
    headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
    authorization = headers.pop("Authorization")
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert signed == ["content-type", "host", "x-amz-date", "x-amz-target"]
    headers = {k: v for k, v in headers.items() if k.lower() in signed}
    copy = AWSRequest(method=request.method, url=request.url, headers=headers, data=request.body)
    copy.context["timestamp"] = headers["X-Amz-Date"]
    signer = SigV4Auth(boto3.session.Session().get_credentials(), "dynamodb", REGION_A)
    expected = signer.signature(signer.string_to_sign(copy, signer.canonical_request(copy)), copy)
    assert authorization.endswith("Signature=" + expected)
    # and a body that differs by one byte would not have it
    copy.data = request.body.replace(b'"plain"', b'"plaiN"')
    assert signer.signature(signer.string_to_sign(copy, signer.canonical_request(copy)), copy) != expected
