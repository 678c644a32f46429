"""BatchWriteItem on the wire: the vault's item text sent as the request body, as it is.

The vault stores every item as canonical DynamoDB JSON, the very form DynamoDB's JSON protocol carries. Decoding
it to Python values (``codec.decode_item``: bytes for binaries, lists for sets) only for botocore to walk every
attribute through its shape model and base64-encode every binary again costs more CPU than the HTTP call. The
restore's load instead concatenates the stored texts into the request body, the same idea as the scan's
``before-parse`` fast path (``aws.RawMember``) in the other direction.

How the body reaches DynamoDB: the call still goes through the client's ``batch_write_item``, so endpoint
resolution, SigV4 signing, connection pooling, error parsing and ddbvault's retry loop are the same as for any
other call. The request's ``RequestItems`` is a :class:`WireBody`; a ``before-parameter-build`` handler moves it
into the request's context and leaves a one-entry placeholder for botocore to validate and serialise, and a
``before-call`` handler (after serialisation, before signing) replaces the serialised body with the wire body.
The response is parsed by botocore as usual: it holds only ``UnprocessedItems`` (usually empty) and
``ConsumedCapacity``.

The body is JSON-equal to what botocore sends for the decoded items (a test checks every attribute type): same
attribute order, same number texts, same standard padded base64. It differs only in spacing (compact) and in
writing non-ASCII characters as UTF-8 rather than ``\\uXXXX`` escapes, both the same JSON.
"""
from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any, Dict, Hashable, NamedTuple, Optional, Sequence, Tuple

OPERATION = "BatchWriteItem"
_CONTEXT_KEY = "ddbvault_wire_body"


class WireItem(NamedTuple):
    """One write as text: ``text`` is an item's canonical DynamoDB JSON (a put) or a key's (a delete); ``key`` is
    the primary key in ``batch_write.key_of``'s form (numbers as Decimal, binaries as bytes)."""

    text: str
    key: Tuple[Tuple[str, Hashable], ...]
    delete: bool = False


class WireBody:
    """A whole BatchWriteItem request body, passed where botocore expects ``RequestItems``."""

    __slots__ = ("body", "table")

    def __init__(self, table: str, body: bytes) -> None:
        self.table = table
        self.body = body


def request_body(table: str, entries: Sequence[WireItem], return_consumed: str = "TOTAL") -> bytes:
    """The BatchWriteItem body for ``entries``, by string concatenation of their texts (no item is parsed)."""
    parts = []
    for entry in entries:
        if entry.delete:
            parts.append('{"DeleteRequest":{"Key":' + entry.text + "}}")
        else:
            parts.append('{"PutRequest":{"Item":' + entry.text + "}}")
    return ('{"RequestItems":{' + json.dumps(table, ensure_ascii=False) + ":[" + ",".join(parts) + "]},"
            '"ReturnConsumedCapacity":' + json.dumps(return_consumed) + "}").encode("utf-8")


def key_tuple(types: Sequence[str], values: Sequence[Optional[str]]) -> Tuple[Tuple[str, Hashable], ...]:
    """A key in ``batch_write.key_of``'s form from the vault's canonical key columns (``pk``, ``sk``): S as is,
    N as Decimal, B decoded from its base64 text."""
    parts = []
    for tag, value in zip(types, values):
        if value is None:
            raise ValueError(f"a {tag} key value is missing")
        if tag == "N":
            parts.append((tag, Decimal(value)))
        elif tag == "B":
            parts.append((tag, base64.b64decode(value)))
        else:
            parts.append((tag, value))
    return tuple(parts)


def key_text(names: Sequence[str], types: Sequence[str], values: Sequence[Optional[str]]) -> str:
    """A key as DynamoDB JSON text from the vault's canonical key columns (for a DeleteRequest)."""
    fields = []
    for name, tag, value in sorted(zip(names, types, values)):
        fields.append(json.dumps(name, ensure_ascii=False) + ':{"' + tag + '":' +
                      json.dumps(value, ensure_ascii=False) + "}")
    return "{" + ",".join(fields) + "}"


def _take_body(params: Dict[str, Any], context: Dict[str, Any], **_: Any) -> None:
    """``before-parameter-build``: a :class:`WireBody` leaves the parameters for the request's context; botocore
    validates and serialises a one-entry placeholder instead (replaced by :func:`_put_body`)."""
    wire = params.get("RequestItems")
    if isinstance(wire, WireBody):
        context[_CONTEXT_KEY] = wire.body
        params["RequestItems"] = {wire.table: [{"DeleteRequest": {"Key": {}}}]}


def _put_body(params: Dict[str, Any], context: Dict[str, Any], **_: Any) -> None:
    """``before-call``: the serialised placeholder is replaced by the wire body, before the request is signed
    (signing hashes the body that is sent); a retry inside botocore would resend the same body."""
    body = context.pop(_CONTEXT_KEY, None)
    if body is not None:
        params["body"] = body


EVENTS = ((f"before-parameter-build.dynamodb.{OPERATION}", _take_body),
          (f"before-call.dynamodb.{OPERATION}", _put_body))
