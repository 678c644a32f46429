"""Stream records to change rows: pure functions, no I/O (used on the executors).

A change row is what ``<vault>/changes`` keeps per applied record and what the merge folds into ``items``:
the canonical key columns, the event, the new image as the codec's canonical text (null for a REMOVE), the
record's change time and its position in stream order, and where it came from.

Stream order across a shard lineage: sequence numbers are ordered within a shard, and a shard's children
come after it, but DynamoDB does not promise that a child's numbers exceed its parent's. ``change_seq`` is
therefore the shard's lineage depth (its *generation*, 6 digits) followed by the SequenceNumber zero-padded
to 40 digits: one string whose order is stream order for every key, since a key lives in one lineage.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Dict, Mapping, Optional, Tuple

from ddbvault import codec
from ddbvault.errors import ChangeRecordError
from ddbvault.vault import layout

INSERT, MODIFY, REMOVE = "INSERT", "MODIFY", "REMOVE"
EVENTS = (INSERT, MODIFY, REMOVE)
GEN_WIDTH = 6
TTL_PRINCIPAL = "dynamodb.amazonaws.com"




def stream_order(generation: int, sequence_number: str) -> str:
    """``change_seq``: generation then SequenceNumber, both zero-padded, so string order is stream order."""
    digits = str(sequence_number)
    if not digits.isdigit() or len(digits) > layout.SEQ_WIDTH:
        raise ChangeRecordError(f"SequenceNumber {sequence_number!r} is not a number of at most "
                                f"{layout.SEQ_WIDTH} digits")
    if not 0 <= generation < 10 ** GEN_WIDTH:
        raise ChangeRecordError(f"shard generation {generation} out of range")
    return f"{generation:0{GEN_WIDTH}d}{digits:0>{layout.SEQ_WIDTH}}"


def is_ttl_delete(record: Mapping[str, Any]) -> bool:
    """A REMOVE made by DynamoDB's TTL process (userIdentity type Service, principal dynamodb.amazonaws.com)."""
    identity = record.get("userIdentity") or {}
    return (str(identity.get("type", "")).lower() == "service"
            and str(identity.get("principalId", "")).lower() == TTL_PRINCIPAL)


def as_utc(value: Any) -> datetime:
    """ApproximateCreationDateTime as an aware UTC datetime: boto3 gives a datetime, raw JSON epoch seconds."""
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    if isinstance(value, str):
        try:
            return datetime.fromtimestamp(float(value), tz=timezone.utc)
        except ValueError:
            return as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    raise ChangeRecordError(f"ApproximateCreationDateTime {value!r} is not a time")


@dataclass(frozen=True)
class KeyNames:
    hash_key: str
    range_key: Optional[str]


def key_columns(keys: Mapping[str, Any], names: KeyNames) -> Tuple[str, Optional[str], str]:
    """(pk, sk, canonical Keys text) of a record's ``Keys`` map."""
    if names.hash_key not in keys or (names.range_key and names.range_key not in keys):
        raise ChangeRecordError(f"record Keys {sorted(keys)} lack the table's key "
                          f"{[n for n in (names.hash_key, names.range_key) if n]}")
    pk = codec.key_value(keys[names.hash_key], names.hash_key)
    sk = codec.key_value(keys[names.range_key], names.range_key) if names.range_key else None
    return pk, sk, codec.encode_item(dict(keys))


# Columns of a change row in the order change_row returns them (the change log adds batch and day).
CHANGE_COLUMNS = ("pk", "sk", "event_name", "keys", "item", "item_size", "change_time", "change_seq",
                  "sequence_number", "shard_id", "event_id", "ttl_delete", "run_id")


def change_row(record: Mapping[str, Any], names: KeyNames, generation: int, shard_id: str,
               run_id: str) -> tuple:
    """One DynamoDB Streams record (API, Lambda or raw JSON shape) as a change row (see CHANGE_COLUMNS)."""
    body = record.get("dynamodb") or {}
    seq = str(body.get("SequenceNumber", ""))
    return row_of(record, names, order=stream_order(generation, seq), sequence_number=seq, source=shard_id,
                  event_id=str(record.get("eventID") or f"{shard_id}:{seq}"), run_id=run_id)


def row_of(record: Mapping[str, Any], names: KeyNames, *, order: str, sequence_number: str, source: str,
           event_id: str, run_id: str, event: Optional[str] = None, when: Any = None) -> tuple:
    """A change row of a record in the Streams shape (``eventName``, ``dynamodb.{Keys, NewImage,
    ApproximateCreationDateTime}``) whose place in stream order (``order``) the caller knows; ``event`` and
    ``when`` stand in for a shape that carries no eventName or creation time (an incremental export)."""
    event = event or record.get("eventName")
    if event not in EVENTS:
        raise ChangeRecordError(f"stream record {record.get('eventID')} has eventName {event!r}, not one of {EVENTS}")
    body = record.get("dynamodb") or {}
    pk, sk, keys_text = key_columns(body.get("Keys") or {}, names)
    if event == REMOVE:
        text, size = None, None
    else:
        image = body.get("NewImage")
        if image is None:
            raise ChangeRecordError(f"stream record {record.get('eventID')} ({event}) carries no NewImage: the stream "
                              f"view type is {body.get('StreamViewType')}; the vault needs NEW_IMAGE or "
                              f"NEW_AND_OLD_IMAGES")
        row_pk, row_sk, text, size = codec.to_vault_record(image, names.hash_key, names.range_key)
        if (row_pk, row_sk) != (pk, sk):
            raise ChangeRecordError(f"stream record {record.get('eventID')}: NewImage key differs from Keys")
    moment = when if when is not None else as_utc(body.get("ApproximateCreationDateTime"))
    return (pk, sk, event, keys_text, text, size, moment, order, sequence_number, source, event_id,
            event == REMOVE and is_ttl_delete(record), run_id)


def change_schema():
    """Spark schema of change rows as :func:`change_row` makes them."""
    from pyspark.sql import types as T

    return T.StructType([
        T.StructField("pk", T.StringType(), False),
        T.StructField("sk", T.StringType(), True),
        T.StructField("event_name", T.StringType(), False),
        T.StructField("keys", T.StringType(), False),
        T.StructField("item", T.StringType(), True),
        T.StructField("item_size", T.LongType(), True),
        T.StructField("change_time", T.TimestampType(), False),
        T.StructField("change_seq", T.StringType(), False),
        T.StructField("sequence_number", T.StringType(), False),
        T.StructField("shard_id", T.StringType(), False),
        T.StructField("event_id", T.StringType(), False),
        T.StructField("ttl_delete", T.BooleanType(), False),
        T.StructField("run_id", T.StringType(), False),
    ])


def position_dict(shard_id: str, last_seq: Optional[str], done: bool, records: int) -> Dict[str, Any]:
    return {"shard_id": shard_id, "last_seq": last_seq, "done": done, "records": records}
