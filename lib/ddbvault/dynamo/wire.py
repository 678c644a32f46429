"""BatchWriteItem on the wire: the vault's item text sent as the request body, as it is.

The vault stores every item as canonical DynamoDB JSON, the very form DynamoDB's JSON protocol carries. Decoding
it to Python values (``codec.decode_item``: bytes for binaries, lists for sets) only for botocore to walk every
attribute through its shape model and base64-encode every binary again costs more CPU than the HTTP call. The
restore's load instead concatenates the stored texts into the request body, the same idea as the scan's
``before-parse`` fast path (``aws.RawMember``) in the other direction.

How the body reaches DynamoDB: a :class:`Sender` signs it (botocore's SigV4 signer, the process's credentials)
and sends it on the client's own HTTP session (its connection pool, TLS settings, proxies and timeouts), then
reads the answer with ``json.loads``. The client's per-call pipeline (parameter building and validation, endpoint
rules, the user-agent string rebuilt on every call, a dozen events) costs about as much CPU again as the HTTP
exchange itself, 0.9 ms against 0.4 ms a call on this project's benchmark machine, and a restore makes one call per
25 items. Errors come back as botocore's ``ClientError`` with the code and HTTP status botocore's JSON parser would
give, so ddbvault's retry loop (``dynamo.retry``) classifies throttles, server errors and connection failures the
same way. Where the client does not offer what the sender needs (no HTTP session, no credentials), the call goes
through the client instead: the request's ``RequestItems`` is a :class:`WireBody`; a ``before-parameter-build``
handler moves it into the request's context and leaves a one-entry placeholder for botocore to validate and
serialise, and a ``before-call`` handler (after serialisation, before signing) replaces the serialised body with
the wire body.

The body is JSON-equal to what botocore sends for the decoded items (a test checks every attribute type): same
attribute order, same number texts, same standard padded base64. It differs only in spacing (compact) and in
writing non-ASCII characters as UTF-8 rather than ``\\uXXXX`` escapes, both the same JSON.
"""
from __future__ import annotations

import base64
import json
import zlib
from decimal import Decimal
from typing import Any, Dict, Hashable, NamedTuple, Optional, Sequence, Tuple

import botocore
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ChecksumError, ClientError

from ddbvault import codec

OPERATION = "BatchWriteItem"
TARGET = "DynamoDB_20120810." + OPERATION
SERVICE = "dynamodb"
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


class Sender:
    """BatchWriteItem with a body ddbvault built: signed with botocore's SigV4 signer and sent on ``client``'s own
    HTTP session, without the client's per-call pipeline. Thread-safe, as the client's session is.

    It posts to the client's endpoint (``client.meta.endpoint_url``: the region's, FIPS or dual-stack as
    configured, or ``AWS_ENDPOINT_URL_DYNAMODB``). botocore may pick an account-based endpoint
    (``<account>.ddb.<region>.amazonaws.com``) per call when the credentials name an account; the regional one
    this uses serves the same tables.

    The answer is what the client would return for the same call, apart from types botocore's parser would give:
    ``UnprocessedItems`` has binaries as ``bytes`` (the low-level form the writer matches keys in), and an error
    is a ``ClientError`` with the code (``__type`` after its ``#``), message and HTTP status. A response whose
    ``x-amz-crc32`` does not match its body raises ``ChecksumError`` (retried: a BatchWriteItem of puts and
    deletes may be sent again)."""

    def __init__(self, http: Any, endpoint_url: str, region: str, credentials: Any) -> None:
        self._http = http
        self._url = endpoint_url.rstrip("/") + "/"
        self._region = region
        self._credentials = credentials
        self._headers = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": TARGET,
                         "User-Agent": f"ddbvault Botocore/{botocore.__version__}"}

    @classmethod
    def of(cls, client: Any, credentials: Any) -> Optional[Sender]:
        """A sender on ``client``'s HTTP session, or None when the client has none to lend or there are no
        credentials (the client's own path then raises botocore's usual error)."""
        http = getattr(getattr(client, "_endpoint", None), "http_session", None)
        if http is None or not hasattr(http, "send") or credentials is None:
            return None
        if client.meta.config.signature_version not in (None, "v4"):
            return None
        return cls(http, client.meta.endpoint_url, client.meta.region_name, credentials)

    def batch_write_item(self, body: bytes) -> Dict[str, Any]:
        request = AWSRequest(method="POST", url=self._url, data=body, headers=dict(self._headers))
        # Frozen once per call: a refreshable set never mixes an old key with a new token within one signature.
        SigV4Auth(self._credentials.get_frozen_credentials(), SERVICE, self._region).add_auth(request)
        response = self._http.send(request.prepare())
        content = response.content
        expected = response.headers.get("x-amz-crc32")
        if expected is not None and zlib.crc32(content) & 0xFFFFFFFF != int(expected):
            raise ChecksumError(checksum_type="crc32", expected_checksum=expected,
                                actual_checksum=zlib.crc32(content) & 0xFFFFFFFF)
        if response.status_code != 200:
            raise ClientError(_error_response(response.status_code, content, response.headers), OPERATION)
        answer = json.loads(content)
        unprocessed = answer.get("UnprocessedItems")
        if unprocessed:
            answer["UnprocessedItems"] = {
                table: [_binaries_as_bytes(entry) for entry in entries] for table, entries in unprocessed.items()}
        return answer


def _binaries_as_bytes(request: Dict[str, Any]) -> Dict[str, Any]:
    """A returned PutRequest/DeleteRequest with its item's or key's binaries as bytes, as botocore parses them."""
    for kind, member in (("PutRequest", "Item"), ("DeleteRequest", "Key")):
        inner = request.get(kind)
        if inner and member in inner:
            return {kind: {member: codec.decode_item(codec.compact_json(inner[member]))}}
    return request


def _error_response(status: int, content: bytes, headers: Any) -> Dict[str, Any]:
    """The error as botocore's JSON-protocol parser gives it: ``Code`` from ``__type``, else the HTTP status."""
    code, message = str(status), ""
    try:
        doc = json.loads(content)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        code = str(doc.get("__type") or code).rsplit("#", 1)[-1]
        message = str(doc.get("message") or doc.get("Message") or "")
    elif content:
        message = content[:200].decode("utf-8", "replace")
    return {"Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status,
                                 "RequestId": headers.get("x-amzn-RequestId", ""),
                                 "HTTPHeaders": {k.lower(): v for k, v in headers.items()}}}
