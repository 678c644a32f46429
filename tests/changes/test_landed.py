"""Landed change files as change rows, and the landing ledger: pure functions, no Spark, no server."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from ddbvault import merge_files
from ddbvault.changes import landed, records
from ddbvault.errors import ChangeRecordError
from ddbvault.merge import MergeOptions

PLAN = landed.FilePlan(landed.KINESIS, "Orders", "pk", "sk", "us-west-2", "run-1")


def kinesis(event_id, at, precision=None, event="MODIFY", table="Orders"):
    body = {"ApproximateCreationDateTime": at, "Keys": {"pk": {"S": "a"}, "sk": {"N": "1"}}}
    if event != "REMOVE":
        body["NewImage"] = {"pk": {"S": "a"}, "sk": {"N": "1"}, "v": {"B": "AAE="}}
    if precision:
        body["ApproximateCreationDateTimePrecision"] = precision
    return {"eventID": event_id, "eventName": event, "tableName": table, "dynamodb": body,
            "recordFormat": "application/json", "eventSource": "aws:dynamodb", "userIdentity": None}


def test_kinesis_times_in_milliseconds_and_microseconds_order_alike():
    ms = landed.kinesis_row(PLAN, kinesis("e1", 1764234000123), "f")
    us = landed.kinesis_row(PLAN, kinesis("e2", 1764234000123456, "MICROSECOND"), "f")
    guessed = landed.kinesis_row(PLAN, kinesis("e3", 1764234000123457), "f")
    assert ms[6] == datetime(2025, 11, 27, 9, 0, 0, 123000, tzinfo=timezone.utc)
    assert us[6] == datetime(2025, 11, 27, 9, 0, 0, 123456, tzinfo=timezone.utc)
    assert ms[7] < us[7] < guessed[7]
    assert (us[7], us[8], us[9], us[10]) == ("1764234000123456e2", "", "f", "e2")
    assert us[4] == '{"pk":{"S":"a"},"sk":{"N":"1"},"v":{"B":"AAE="}}'


def test_a_kinesis_record_of_another_table_is_refused():
    with pytest.raises(ChangeRecordError, match="record of table 'Other', not Orders"):
        landed.kinesis_row(PLAN, kinesis("e1", 1764234000123, table="Other"), "s3://b/k")


def test_firehose_objects_concatenated_with_or_without_newlines():
    text = '{"a":1}{"b":2}\n{"c":3}\n\n {"d":4}'
    assert list(landed.json_objects("u", text)) == [{"a": 1}, {"b": 2}, {"c": 3}, {"d": 4}]
    with pytest.raises(ChangeRecordError, match="not JSON records at character 7"):
        list(landed.json_objects("u", '{"a":1}{"b":'))


@pytest.mark.parametrize("images,view,event", [
    ({"NewImage": True}, "NEW_AND_OLD_IMAGES", records.INSERT),
    ({"NewImage": True, "OldImage": True}, "NEW_AND_OLD_IMAGES", records.MODIFY),
    ({"OldImage": True}, "NEW_AND_OLD_IMAGES", records.REMOVE),
    ({}, "NEW_IMAGE", records.REMOVE),
    ({"NewImage": True}, "NEW_IMAGE", records.MODIFY),
])
def test_incremental_export_lines_tell_events_apart_by_their_images(images, view, event):
    image = {"pk": {"S": "a"}, "sk": {"N": "1"}, "v": {"S": ""}}
    line = {"Metadata": {"WriteTimestampMicros": {"N": "1764234000123456"}},
            "Keys": {"pk": {"S": "a"}, "sk": {"N": "1"}}}
    line.update({name: image for name in images})
    row = landed.incremental_row(PLAN, line, "f", view)
    assert (row[2], row[4] is None, row[7]) == (event, event == records.REMOVE, "1764234000123456" + "0" * 40)
    assert row[6] == datetime(2025, 11, 27, 9, 0, 0, 123456, tzinfo=timezone.utc)


def test_the_landing_ledger_reads_each_file_once_and_a_rewritten_one_again(monkeypatch):
    now = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)

    def file(name, minutes_ago, etag):
        return landed.Landed(f"s3://b/p/{name}", etag, (now - timedelta(minutes=minutes_ago)).isoformat())

    listing = [file("old", 60, "1"), file("recent", 10, "2"), file("rewritten", 5, "3"), file("new", 1, "4")]
    monkeypatch.setattr(landed, "list_landed", lambda uri, region: listing)
    opts = MergeOptions(table="Orders", vault="v", region="us-east-1", source="s3://b/p", source_format="kinesis")
    ledger = {"landed_before": (now - timedelta(minutes=30)).isoformat(),
              "recent": {"s3://b/p/recent": "2", "s3://b/p/rewritten": "old-etag"}}
    pending, after = merge_files._pending_files(opts, ledger, now)
    assert [f.uri for f in pending] == ["s3://b/p/rewritten", "s3://b/p/new"]
    assert after == {"landed_before": (now - timedelta(minutes=15)).isoformat(),
                     "recent": {"s3://b/p/recent": "2", "s3://b/p/rewritten": "3", "s3://b/p/new": "4"}}
    first, _ = merge_files._pending_files(opts, {}, now)
    assert [f.uri for f in first] == [f.uri for f in listing]
