"""The shipped Lambda function (ddbvault.changes.lambda_sink) on events of the documented shape, against moto S3.

The event is the Lambda Developer Guide's DynamoDB example ("Using AWS Lambda with Amazon DynamoDB"): Records[] with
eventID, eventName, eventVersion, eventSource, awsRegion, dynamodb {ApproximateCreationDateTime, Keys, NewImage,
OldImage, SequenceNumber, SizeBytes, StreamViewType} and eventSourceARN.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import uuid

import boto3
import pytest

from ddbvault.changes import lambda_sink
from servers import REGION_B

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/Orders/stream/2026-11-27T09:00:00.000"


def record(seq: int, event: str = "INSERT") -> dict:
    body = {"ApproximateCreationDateTime": 1764234000 + seq, "Keys": {"Id": {"N": str(seq)}},
            "SequenceNumber": f"{4421584500000000017450439091 + seq}", "SizeBytes": 26,
            "StreamViewType": "NEW_AND_OLD_IMAGES"}
    if event != "REMOVE":
        body["NewImage"] = {"Id": {"N": str(seq)}, "Blob": {"B": "AAEC"}, "Tags": {"SS": ["a", "b"]}}
    return {"eventID": uuid.uuid4().hex, "eventName": event, "eventVersion": "1.1", "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1", "dynamodb": body, "eventSourceARN": ARN}


@pytest.fixture
def landing(aws_endpoint, monkeypatch):
    bucket = "sink-" + uuid.uuid4().hex[:10]
    s3 = boto3.client("s3", region_name=REGION_B)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION_B})
    monkeypatch.setenv(lambda_sink.DESTINATION, f"s3://{bucket}/changes")
    return bucket, s3


def landed(s3, bucket):
    out = {}
    for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        answer = s3.get_object(Bucket=bucket, Key=obj["Key"])
        lines = gzip.decompress(answer["Body"].read()).decode().splitlines()
        out[obj["Key"]] = ([json.loads(line) for line in lines], answer["Metadata"])
    return out


def test_a_batch_lands_in_chunks_named_by_stream_and_first_sequence(landing, monkeypatch):
    bucket, s3 = landing
    monkeypatch.setattr(lambda_sink, "CHUNK", 3)
    records = [record(i, "REMOVE" if i == 4 else "INSERT") for i in range(7)]
    assert lambda_sink.handler({"Records": records}, None, s3=s3) == {"batchItemFailures": []}
    found = landed(s3, bucket)
    prefix = "changes/Orders/2026-11-27T09-00-00.000/"
    assert sorted(found) == [f"{prefix}{int(r['dynamodb']['SequenceNumber']):040d}-"
                             f"{hashlib.sha256(r['eventID'].encode()).hexdigest()[:12]}.json.gz"
                             for r in (records[0], records[3], records[6])]
    assert [found[k][0] for k in sorted(found)] == [records[0:3], records[3:6], records[6:7]]
    assert [found[k][1] for k in sorted(found)] == [
        {"records": str(len(chunk)), "last-sequence": chunk[-1]["dynamodb"]["SequenceNumber"]}
        for chunk in (records[0:3], records[3:6], records[6:7])]


def test_a_retried_invocation_overwrites_the_same_object(landing):
    bucket, s3 = landing
    records = [record(i) for i in range(5)]
    lambda_sink.handler({"Records": records}, None, s3=s3)
    first = {k: s3.head_object(Bucket=bucket, Key=k)["ETag"] for k in landed(s3, bucket)}
    lambda_sink.handler({"Records": records}, None, s3=s3)
    again = {k: s3.head_object(Bucket=bucket, Key=k)["ETag"] for k in landed(s3, bucket)}
    assert again == first and len(first) == 1  # same key, byte-identical body (gzip without a time stamp)


def test_a_chunk_that_cannot_be_written_is_reported_from_its_first_record(landing, monkeypatch):
    bucket, s3 = landing
    monkeypatch.setattr(lambda_sink, "CHUNK", 2)
    records = [record(i) for i in range(6)]

    class Failing:
        def __init__(self) -> None:
            self.calls = 0

        def put_object(self, **kwargs):
            self.calls += 1
            if self.calls == 2:
                raise OSError("connection reset")
            return s3.put_object(**kwargs)

    answer = lambda_sink.handler({"Records": records}, None, s3=Failing())
    assert answer == {"batchItemFailures": [{"itemIdentifier": records[2]["dynamodb"]["SequenceNumber"]}]}
    assert [v[0] for v in landed(s3, bucket).values()] == [records[0:2]]  # kept; nothing after the failure
    # Lambda retries from the reported record: the rest lands, named as it would have been.
    assert lambda_sink.handler({"Records": records[2:]}, None, s3=s3) == {"batchItemFailures": []}
    assert [v[0] for _, v in sorted(landed(s3, bucket).items())] == [records[0:2], records[2:4], records[4:6]]


def test_a_destination_that_is_not_s3_is_refused(monkeypatch):
    monkeypatch.setenv(lambda_sink.DESTINATION, "/tmp/x")
    with pytest.raises(ValueError, match="must be s3://bucket/prefix"):
        lambda_sink.handler({"Records": [record(1)]}, None, s3=object())
