"""Items per second per core of the item codec against boto3's TypeDeserializer + TypeSerializer.

One round trip per item, on both sides:
- ddbvault: ``to_vault_record`` (the export: validate, canonical text, keys, size) then ``decode_item`` (the
  restore: text back to the low-level client form);
- boto3: ``TypeDeserializer`` over every attribute (what scan-side tools do with a page) then ``TypeSerializer``
  back to the low-level form (what a restore hands to BatchWriteItem). boto3 makes no text at all; ddbvault does.

A second ddbvault line times the same round trip on the export's own input form: items decoded by ``json.loads``
from the HTTP body of a Scan page (see ``ddbvault.dynamo.scan``), so binaries arrive as base64 *strings*, not bytes.

A second boto3 line is a fairer cost reference for a tool that must store items as text and read them back, as
ddbvault does: ``TypeDeserializer`` -> ``json.dumps`` (Decimal as str, Binary as base64, sets as lists) ->
``json.loads`` -> ``TypeSerializer``. That baseline is LOSSY (sets come back as lists, numbers and binaries as
strings: exactly the peers' bug that ddbvault exists to avoid), so it is a cost reference only, not a correct
alternative. Ratios are printed against both boto3 lines.

Times are CPU seconds of this process (``time.process_time``): items per second per core, steadier than wall time
on a shared machine. A last line, for context only, times bare ``json.dumps`` + ``json.loads`` of the same items.

Items are realistic ~1 KB nested items generated with a seeded random (strings, numbers, a nested map, a list, a
string set, a binary), in the low-level client form (binaries as bytes). Numbers stay within what boto3's
38-digit context accepts, so boto3 gets through them. Single process; never asserts on time.

    .venv/bin/python bench/bench_codec.py [--items 100000] [--chunk 10000]
"""
from __future__ import annotations

import argparse
import base64
import decimal
import json
import random
import time
from typing import Any, Dict, List

import common
from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer

from ddbvault import codec


def make_item(rnd: random.Random, i: int) -> Dict[str, Any]:
    """The benchmarks' ~1 KB realistic item (bench/common.py), binaries as bytes like the boto3 client's."""
    return common.make_item(rnd, i, range_key=True)


def run_ddbvault(items: List[Dict[str, Any]]) -> float:
    to_record, decode = codec.to_vault_record, codec.decode_item
    start = time.process_time()
    for item in items:
        _, _, text, _ = to_record(item, "pk", "sk")
        decode(text)
    return time.process_time() - start


def run_boto3(items: List[Dict[str, Any]]) -> float:
    deser, ser = TypeDeserializer().deserialize, TypeSerializer().serialize
    start = time.process_time()
    for item in items:
        python = {k: deser(v) for k, v in item.items()}
        {k: ser(v) for k, v in python.items()}
    return time.process_time() - start


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _boto3_default(obj: Any) -> Any:
    """json.dumps fallback of a boto3-based tool: Decimal as str, Binary as base64, sets as lists (lossy)."""
    if isinstance(obj, decimal.Decimal):
        return str(obj)
    if isinstance(obj, Binary):
        return _b64(obj.value)
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def run_boto3_text(items: List[Dict[str, Any]]) -> float:
    """Cost reference only (lossy, see the module docstring): TypeDeserializer -> json.dumps -> json.loads ->
    TypeSerializer, what a boto3-based tool does to store items as text and get them back."""
    deser, ser = TypeDeserializer().deserialize, TypeSerializer().serialize
    dumps, loads = json.dumps, json.loads
    start = time.process_time()
    for item in items:
        text = dumps({k: deser(v) for k, v in item.items()}, ensure_ascii=False, separators=(",", ":"),
                     default=_boto3_default)
        {k: ser(v) for k, v in loads(text).items()}
    return time.process_time() - start


def export_form(item: Dict[str, Any]) -> Dict[str, Any]:
    """``item`` as the export gets it from ``json.loads`` of a Scan page: binaries as base64 strings."""
    return json.loads(json.dumps(item, ensure_ascii=False, default=_b64))


def run_json_floor(items: List[Dict[str, Any]]) -> float:
    """Context, not a competitor: json.dumps + json.loads of the low-level form, no validation, no canonical
    form, no size, binaries left as base64 text (what the two C JSON passes alone cost)."""
    dumps, loads = json.dumps, json.loads
    start = time.process_time()
    for item in items:
        loads(dumps(item, ensure_ascii=False, separators=(",", ":"), default=_b64))
    return time.process_time() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=10_000, help="items generated and timed at a time")
    args = parser.parse_args(argv)

    rnd = random.Random(20240501)
    ours = ours_export = theirs = theirs_text = floor = 0.0
    text_bytes = 0
    done = 0
    while done < args.items:
        n = min(args.chunk, args.items - done)
        items = [make_item(rnd, done + i) for i in range(n)]
        exported = [export_form(it) for it in items]
        if done == 0:
            text_bytes = sum(len(codec.encode_item(it).encode()) for it in items) // n
            sizes = [codec.item_size(it) for it in items]
        # alternate the order so neither side always runs on a warmer cache
        if (done // args.chunk) % 2:
            theirs += run_boto3(items)
            theirs_text += run_boto3_text(items)
            ours += run_ddbvault(items)
            ours_export += run_ddbvault(exported)
        else:
            ours += run_ddbvault(items)
            ours_export += run_ddbvault(exported)
            theirs += run_boto3(items)
            theirs_text += run_boto3_text(items)
        floor += run_json_floor(items)
        done += n

    print(f"items: {done}, mean DynamoDB size {sum(sizes) / len(sizes):.0f} B, mean vault text {text_bytes} B")
    print(f"ddbvault  to_vault_record + decode_item (B as bytes)    : {done / ours:>10,.0f} items/s  ({ours:.2f} s)")
    print(f"ddbvault  same, export form (B as base64 str)           : {done / ours_export:>10,.0f} items/s  "
          f"({ours_export:.2f} s)")
    print(f"boto3     TypeDeserializer + Serializer                 : {done / theirs:>10,.0f} items/s  "
          f"({theirs:.2f} s)")
    print(f"boto3     Deser + json.dumps + json.loads + Ser (LOSSY) : {done / theirs_text:>10,.0f} items/s  "
          f"({theirs_text:.2f} s)")
    print(f"ratio ddbvault (bytes)  / boto3                         : {theirs / ours:>10.2f}x")
    print(f"ratio ddbvault (export) / boto3                         : {theirs / ours_export:>10.2f}x")
    print(f"ratio ddbvault (bytes)  / boto3 text round trip         : {theirs_text / ours:>10.2f}x")
    print(f"ratio ddbvault (export) / boto3 text round trip         : {theirs_text / ours_export:>10.2f}x")
    print(f"(context) bare json.dumps + json.loads                  : {done / floor:>10,.0f} items/s  "
          f"({floor:.2f} s)")

if __name__ == "__main__":
    main()
