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


def capture_requests(client, monkeypatch):
    """Every request ``client``'s HTTP session sends, as sent (body, headers): the client's own calls and the
    wire ``Sender``'s, which borrows that session, alike."""
    sent = []
    http = client._endpoint.http_session
    send = http.send

    def record(request):
        sent.append(request)
        return send(request)

    monkeypatch.setattr(http, "send", record)
    return sent


def batch_bodies(requests):
    """The bodies of the captured BatchWriteItem requests."""
    return [bytes(r.body) for r in requests if _text(r.headers.get("X-Amz-Target")).endswith(".BatchWriteItem")]


def _text(value):
    return value.decode() if isinstance(value, bytes) else (value or "")


@pytest.mark.parametrize("make", [every_type, unicode_item], ids=["every-type", "unicode"])
def test_wire_body_equals_what_botocore_sends(tables, make, monkeypatch):
    name = tables.create("pk", "S", "sk", "N")
    other = tables.create("pk", "S", "sk", "N")
    texts = [codec.encode_item(make(i)) for i in range(30)]
    # The writer's clients are cached per process: these are theirs, in a cache of this test's own (the
    # recording handlers stay off the clients other tests get).
    monkeypatch.setattr(aws, "_clients", {})
    wired = capture_requests(aws.client("dynamodb", REGION_A, data_plane=True, events=wire.EVENTS), monkeypatch)
    stats_wire = write_items(name, wire_records(texts), key_names=("pk", "sk"), region=REGION_A, policy=FAST)
    plain = [(codec.decode_item(t), codec.item_size(codec.decode_item(t))) for t in texts]
    botocore_body = capture_requests(aws.client("dynamodb", REGION_A, data_plane=True), monkeypatch)
    # The botocore path: a client without the wire handlers, as the writer used before the wire path.
    monkeypatch.setattr(wire, "EVENTS", ())
    stats_plain = write_items(other, plain, key_names=("pk", "sk"), region=REGION_A, policy=FAST)
    wired, botocore_body = batch_bodies(wired), batch_bodies(botocore_body)

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


@pytest.mark.parametrize("path", ["sender", "client"])
def test_the_signature_covers_the_wire_body(tables, path, monkeypatch):
    """The request is signed over the body that is sent, by the wire ``Sender`` and by the client's own path
    (the fallback when the client lends no HTTP session): moto does not check signatures, so this recomputes it."""
    import boto3
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    name = tables.create("pk", "S", "sk", "N")
    texts = [codec.encode_item(every_type(i)) for i in range(3)]
    monkeypatch.setattr(aws, "_clients", {})
    if path == "client":
        monkeypatch.setattr(wire.Sender, "of", classmethod(lambda cls, client, credentials: None))
    requests = capture_requests(aws.client("dynamodb", REGION_A, data_plane=True, events=wire.EVENTS), monkeypatch)
    write_items(name, wire_records(texts), key_names=("pk", "sk"), region=REGION_A, policy=FAST)
    sent = [r for r in requests if _text(r.headers.get("X-Amz-Target")).endswith(".BatchWriteItem")]
    if path == "client":  # botocore's own call: its invocation id header is there, the sender sends none
        assert all("amz-sdk-invocation-id" in r.headers for r in sent)
    else:
        assert not any("amz-sdk-invocation-id" in r.headers for r in sent)
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


def test_the_sender_answers_as_the_client_does(faults, tables, monkeypatch):
    """The same call through the ``Sender`` and through the client: equal answers (binary keys of
    ``UnprocessedItems`` as bytes, capacity figures), and errors with the same code, status and retry class."""
    from botocore.exceptions import ClientError

    from ddbvault.dynamo import retry

    name = tables.create("pk", "B", "sk", "N")
    items = [{"pk": {"B": bytes([i, 0, 255])}, "sk": {"N": f"{i}.5"}, "v": {"BS": [b"\x01", b"\x02"]}}
             for i in range(4)]
    body = wire.request_body(name, [r[0] for r in wire_records([codec.encode_item(i) for i in items],
                                                                 ("B", "N"))])
    client = aws.client("dynamodb", REGION_A, data_plane=True, events=wire.EVENTS)
    sender = wire.Sender.of(client, aws.credentials())
    assert sender is not None

    def both():
        answers = []
        for send in (lambda: sender.batch_write_item(body),
                     lambda: client.batch_write_item(RequestItems=wire.WireBody(name, body),
                                                     ReturnConsumedCapacity="TOTAL")):
            try:
                answer = send()
                answer.pop("ResponseMetadata", None)
                answers.append(answer)
            except ClientError as err:
                answers.append((retry.error_code(err), err.response["ResponseMetadata"]["HTTPStatusCode"],
                                err.response["Error"]["Message"], retry.is_throttle(err), retry.is_retryable(err)))
        return answers

    faults.set_rules(["BatchWriteItem:unprocessed:keep=1"])
    ours, theirs = both()
    assert ours == theirs
    assert [r["PutRequest"]["Item"]["pk"] for r in ours["UnprocessedItems"][name]] == [
        {"B": bytes([i, 0, 255])} for i in (1, 2, 3)]
    assert ours["UnprocessedItems"][name][0]["PutRequest"]["Item"]["v"] == {"BS": [b"\x01", b"\x02"]}
    for rule, expected in (("BatchWriteItem:throttle", ("ProvisionedThroughputExceededException", 400, True)),
                           ("BatchWriteItem:throttle:code=ThrottlingException", ("ThrottlingException", 400, True)),
                           ("BatchWriteItem:server_error", ("InternalServerError", 500, False))):
        faults.set_rules([rule])
        ours, theirs = both()
        assert ours == theirs
        assert (ours[0], ours[1], ours[3], ours[4]) == (*expected, True)


class _Answer:
    def __init__(self, status, content, headers):
        self.status_code, self.content, self.headers = status, content, headers


class _OneAnswer:
    """An HTTP session that answers every request with one canned response."""

    def __init__(self, answer):
        self.answer = answer

    def send(self, request):
        return self.answer


@pytest.mark.parametrize("status,content,crc,expected", [
    (502, b"<html>Bad Gateway</html>", None, ("502", 502, "<html>Bad Gateway</html>")),
    (400, b'{"__type":"com.amazonaws.dynamodb.v20120810#ValidationException","message":"Too many items"}', None,
     ("ValidationException", 400, "Too many items")),
    (200, b'{"UnprocessedItems":{}}', 1234, "checksum"),
])
def test_the_sender_reads_errors_the_way_botocore_does(status, content, crc, expected):
    from botocore.credentials import Credentials
    from botocore.exceptions import ChecksumError, ClientError

    from ddbvault.dynamo import retry

    headers = {"x-amz-crc32": str(crc)} if crc is not None else {}
    sender = wire.Sender(_OneAnswer(_Answer(status, content, headers)), "http://127.0.0.1:9", REGION_A,
                         Credentials("AKID", "secret"))
    if expected == "checksum":
        with pytest.raises(ChecksumError) as err:
            sender.batch_write_item(b"{}")
        assert retry.is_retryable(err.value)  # the answer was damaged in transit: the call is sent again
        return
    with pytest.raises(ClientError) as err:
        sender.batch_write_item(b"{}")
    found = (retry.error_code(err.value), err.value.response["ResponseMetadata"]["HTTPStatusCode"],
             err.value.response["Error"]["Message"])
    assert found == expected
    assert retry.is_retryable(err.value) == (status >= 500)
