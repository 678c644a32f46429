"""Shard planning and the stream reader on hand-made DescribeStream / GetRecords answers: lineage, splits,
trimming, expired iterators, throttling. No server: a scripted client stands in for DynamoDB Streams."""
from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List

import pytest
from botocore.exceptions import ClientError

from ddbvault.changes import records, shards, streams
from ddbvault.errors import CapacityError, ChangeRecordError, StreamGapError

T0 = datetime(2026, 11, 27, 4, 0, 0, tzinfo=timezone.utc)
CUT = T0 + timedelta(minutes=10)


def shard(shard_id, parent=None, start="100", end=None):
    found: Dict[str, Any] = {"ShardId": shard_id, "SequenceNumberRange": {"StartingSequenceNumber": start}}
    if parent:
        found["ParentShardId"] = parent
    if end:
        found["SequenceNumberRange"]["EndingSequenceNumber"] = end
    return found


# A stream whose first shard split in two, and one of the children rolled over once.
TREE = [shard("root", end="199"), shard("left", "root", "200", "299"), shard("right", "root", "210"),
        shard("left2", "left", "300")]


def test_first_merge_reads_every_shard_from_the_horizon_with_lineage_generations():
    tasks = shards.plan(TREE, None)
    assert [(t.shard_id, t.generation, t.start, t.seq, t.closed) for t in tasks] == [
        ("left", 1, "TRIM_HORIZON", None, True), ("left2", 2, "TRIM_HORIZON", None, False),
        ("right", 1, "TRIM_HORIZON", None, False), ("root", 0, "TRIM_HORIZON", None, True)]


def test_later_merges_continue_after_the_checkpoint_and_skip_finished_shards():
    checkpoint = {"root": {"gen": 0, "parent": None, "seq": "199", "done": True},
                  "left": {"gen": 1, "parent": "root", "seq": "250", "done": False},
                  "right": {"gen": 1, "parent": "root", "seq": None, "done": False}}
    tasks = shards.plan(TREE, checkpoint)
    assert [(t.shard_id, t.generation, t.start, t.seq) for t in tasks] == [
        ("left", 1, "AFTER_SEQUENCE_NUMBER", "250"), ("left2", 2, "AT_SEQUENCE_NUMBER", "300"),
        ("right", 1, "AT_SEQUENCE_NUMBER", "210")]
    positions = {"left": records.position_dict("left", "299", True, 3),
                 "left2": records.position_dict("left2", "305", False, 1),
                 "right": records.position_dict("right", None, False, 0)}
    after = shards.next_checkpoint(TREE, checkpoint, tasks, positions)
    assert after == {"root": {"gen": 0, "parent": None, "seq": "199", "done": True},
                     "left": {"gen": 1, "parent": "root", "seq": "299", "done": True},
                     "left2": {"gen": 2, "parent": "left", "seq": "305", "done": False},
                     "right": {"gen": 1, "parent": "root", "seq": None, "done": False}}
    # Once the root ages out of the stream its finished entry goes; its children keep their generations.
    later = shards.next_checkpoint(TREE[1:], after, [], {})
    assert sorted(later) == ["left", "left2", "right"]
    assert [t.generation for t in shards.plan([*TREE[1:], shard("right2", "right", "400")], later)] == [2, 1, 2]


def test_a_checkpointed_shard_that_vanished_unfinished_is_a_gap():
    checkpoint = {"root": {"gen": 0, "parent": None, "seq": "150", "done": False}}
    with pytest.raises(StreamGapError, match=r"shard root, read up to sequence number 150 .* run export_table"):
        shards.plan(TREE[1:], checkpoint)


def test_a_new_shard_whose_parent_was_never_read_is_a_gap():
    checkpoint = {"right": {"gen": 1, "parent": "root", "seq": "220", "done": False}}
    with pytest.raises(StreamGapError, match="shard left2 descends from shard left, which this vault never read"):
        shards.plan([shard("right", "root", "210"), shard("left2", "left", "300")], checkpoint)


def test_stream_order_puts_children_after_parents_whatever_their_numbers():
    parent_late = records.stream_order(0, "990000000000000000000")
    child_early = records.stream_order(1, "100000000000000000000")
    assert child_early > parent_late
    assert records.stream_order(3, "21") < records.stream_order(3, "100")  # numbers, not text
    with pytest.raises(ChangeRecordError):
        records.stream_order(0, "12a")


def record(seq, event="MODIFY", pk="a", when=T0, *, image=True, ttl=False):
    body: Dict[str, Any] = {"Keys": {"pk": {"S": pk}}, "SequenceNumber": str(seq), "ApproximateCreationDateTime": when,
                            "StreamViewType": "NEW_AND_OLD_IMAGES"}
    if image and event != "REMOVE":
        body["NewImage"] = {"pk": {"S": pk}, "v": {"N": str(seq)}, "b": {"B": b"\x00\xff"}}
    found = {"eventID": f"e{seq}", "eventName": event, "dynamodb": body}
    if ttl:
        found["userIdentity"] = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    return found


def error(code, status=400):
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetRecords")


class ScriptedStreams:
    """GetShardIterator / GetRecords answering from a script: per shard a list of pages, each a list of records
    or an exception to raise once; iterators are ``shard:page``."""

    def __init__(self, pages: Dict[str, List[Any]], closed: Dict[str, bool]):
        self.pages, self.closed = pages, closed
        self.iterator_calls: List[Dict[str, Any]] = []

    def get_shard_iterator(self, **kwargs):
        self.iterator_calls.append(kwargs)
        shard_id = kwargs["ShardId"]
        if kwargs["ShardIteratorType"] == "AFTER_SEQUENCE_NUMBER":
            # resume at the page after the one holding that number
            for index, page in enumerate(self.pages[shard_id]):
                if isinstance(page, list) and any(r["dynamodb"]["SequenceNumber"] == kwargs["SequenceNumber"]
                                                  for r in page):
                    return {"ShardIterator": f"{shard_id}:{index + 1}"}
        return {"ShardIterator": f"{shard_id}:0"}

    def get_records(self, ShardIterator, Limit):
        shard_id, index = ShardIterator.split(":")
        index = int(index)
        pages = self.pages[shard_id]
        if index < len(pages) and isinstance(pages[index], Exception):
            raise pages.pop(index)
        if index >= len(pages):
            return {"Records": [], "NextShardIterator": None if self.closed[shard_id] else ShardIterator}
        last = index + 1 == len(pages) and self.closed[shard_id]
        return {"Records": pages[index], "NextShardIterator": None if last else f"{shard_id}:{index + 1}"}


PLAN = streams.ReadPlan("arn:stream", "us-east-1", "pk", None, CUT, "run-1", max_attempts=5)


def read(client, task):
    out = list(streams.read_shard(PLAN, task, client=client, sleep=lambda s: None))
    return out[:-1], out[-1]


def test_a_closed_shard_is_read_to_its_end_through_expired_iterators_and_throttling():
    client = ScriptedStreams({"s": [[record(1), record(2)], error("ExpiredIteratorException"),
                                    error("LimitExceededException"), [record(3, "REMOVE", ttl=True)],
                                    error("InternalServerError", 500), [record(4, "INSERT", pk="b")]]},
                             {"s": True})
    rows, position = read(client, shards.ShardTask("s", 2, "TRIM_HORIZON", None, True))
    assert [(r[0], r[2], r[7][-1], r[11]) for r in rows] == [("a", "MODIFY", "1", False), ("a", "MODIFY", "2", False),
                                                             ("a", "REMOVE", "3", True), ("b", "INSERT", "4", False)]
    assert position == {"shard_id": "s", "last_seq": "4", "done": True, "records": 4}
    # The expired iterator was renewed after the last record read, not from the start.
    assert client.iterator_calls[1] == {"StreamArn": "arn:stream", "ShardId": "s",
                                        "ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": "2"}
    assert rows[0][4] == '{"b":{"B":"AP8="},"pk":{"S":"a"},"v":{"N":"1"}}'
    assert rows[0][7] == records.stream_order(2, "1")


def test_an_open_shard_stops_at_the_cut_and_when_caught_up():
    late = CUT + timedelta(seconds=1)
    client = ScriptedStreams({"o": [[record(1), record(2, when=late), record(3, when=late)]],
                              "q": [[record(5)]]}, {"o": False, "q": False})
    rows, position = read(client, shards.ShardTask("o", 0, "AFTER_SEQUENCE_NUMBER", "0", False))
    assert [r[8] for r in rows] == ["1"] and position == {"shard_id": "o", "last_seq": "1", "done": False,
                                                         "records": 1}
    rows, position = read(client, shards.ShardTask("q", 0, "TRIM_HORIZON", None, False))
    assert [r[8] for r in rows] == ["5"] and not position["done"]


def test_trimmed_records_are_a_gap_and_endless_throttling_fails_clearly():
    client = ScriptedStreams({"t": [error("TrimmedDataAccessException")]}, {"t": True})
    with pytest.raises(StreamGapError, match="shard t are no longer readable"):
        read(client, shards.ShardTask("t", 0, "AT_SEQUENCE_NUMBER", "100", True))
    # Throttling is budgeted by time (ReadPlan.throttle_s); with none left the first throttle ends the read.
    client = ScriptedStreams({"l": [error("LimitExceededException") for _ in range(6)]}, {"l": True})
    with pytest.raises(CapacityError, match=r"GetRecords of stream shard l failed after 1 attempts; last error "
                                            r"LimitExceededException.*--max-stream-reads"):
        list(streams.read_shard(dataclasses.replace(PLAN, throttle_s=0.0), shards.ShardTask("l", 0, "TRIM_HORIZON",
                                                                                           None, True),
                                client=client, sleep=lambda s: None))


def test_a_record_without_a_new_image_is_refused():
    client = ScriptedStreams({"k": [[record(1, image=False)]]}, {"k": True})
    with pytest.raises(ChangeRecordError, match="carries no NewImage"):
        read(client, shards.ShardTask("k", 0, "TRIM_HORIZON", None, True))
