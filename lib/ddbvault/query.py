"""The analysts' projection helper: typed columns out of the vault's ``item`` text, with Spark built-ins only.

    from ddbvault import query
    items = spark.read.format("delta").load("s3://bucket/vault/items")
    query.project(items, {"price": "decimal(20,2)", "tags": "array<string>", "profile.age": "int"})

Paths (the mapping's keys, also the new columns' names): attribute names joined by dots walk into maps
(``profile.age`` is ``item.profile.M.age``); ``[n]`` picks element ``n`` (from 0) of a list (``events[0].kind``);
a name holding a dot, a bracket, a quote or leading/trailing spaces goes in brackets as a JSON string:
``["first.name"]``, ``profile["a.b"][2]``. This is the syntax the codec's error messages use for attribute paths.
Attribute names are matched exactly (case-sensitive), whatever ``spark.sql.caseSensitive`` says; the new columns'
names follow Spark's rules, so two paths differing only in case collide unless that setting is true.

Types (Spark DDL strings) and the DynamoDB types they read:

=============================================  ==============================================================
``string``                                     S
``boolean``                                    BOOL
``binary``                                     B (the base64 text decoded)
``tinyint`` ``smallint`` ``int`` ``bigint``    N, cast (Spark's cast: ``"1.9"`` as int is 1; a value out of the
``float`` ``double`` ``decimal(p,s)``          type's range is null, or an error under ``spark.sql.ansi.enabled``)
``array<string>``                              SS, or an L whose elements are all S
``array<numeric>`` (any numeric above)         NS, or an L whose elements are all N; members cast as above
``array<binary>``                              BS, or an L whose elements are all B
``array<boolean>``                             an L whose elements are all BOOL
=============================================  ==============================================================

A value is null where the attribute (or a map/list on its path) is absent, or is of another DynamoDB type (an L
holding one element of another type included). Set members come in the codec's canonical order (sorted by text).
Maps and lists are not projected whole: project their members, or parse ``item`` yourself with ``from_json``.
The item is parsed once per call, with one ``from_json`` whose schema holds only the types the mapping asks for.
"""
from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple, Union

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ddbvault.errors import UsageError
from ddbvault.vault import layout

_PARSED = "__ddbvault_item_parsed"
_NUMERIC = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType, T.DecimalType)
# Fields of a value's wrapper struct, in the order they appear in the parse schema.
_SCALAR_FIELDS = (("S", T.StringType()), ("N", T.StringType()), ("B", T.StringType()), ("BOOL", T.BooleanType()))
_SET_FIELDS = ("SS", "NS", "BS")

Step = Union[str, int]
_NAME = re.compile(r"[^.\[\]]+")
_INDEX = re.compile(r"\[(\d+)\]")


def parse_path(path: str) -> List[Step]:
    """``profile["a.b"].tags[3]`` -> ``["profile", "a.b", "tags", 3]`` (names are str, list indexes int)."""
    steps: List[Step] = []
    i = 0
    while i < len(path):
        if path.startswith("[", i):
            m = _INDEX.match(path, i)
            if m:
                if not steps:
                    raise UsageError(f"path {path!r} starts with a list index; it must start with an attribute name")
                steps.append(int(m.group(1)))
                i = m.end()
                continue
            if path.startswith('["', i):
                try:
                    name, end = json.JSONDecoder().raw_decode(path, i + 1)
                except ValueError:
                    name, end = None, i
                if isinstance(name, str) and path.startswith("]", end):
                    steps.append(name)
                    i = end + 1
                    continue
            raise UsageError(f"bad path {path!r} at {i}: expected [<index>] or [\"<name>\"]")
        if path.startswith(".", i):
            if not steps:
                raise UsageError(f"bad path {path!r}: it starts with a dot")
            i += 1
        elif steps:
            raise UsageError(f"bad path {path!r} at {i}: expected '.', '[<index>]' or '[\"<name>\"]'")
        m = _NAME.match(path, i)
        if not m:
            raise UsageError(f"bad path {path!r} at {i}: expected an attribute name")
        steps.append(m.group(0))
        i = m.end()
    if not steps:
        raise UsageError("empty attribute path")
    return steps


def _tag_for(dtype: T.DataType) -> Optional[str]:
    """The DynamoDB scalar tag a Spark scalar type reads from, or None."""
    if isinstance(dtype, T.StringType):
        return "S"
    if isinstance(dtype, T.BooleanType):
        return "BOOL"
    if isinstance(dtype, T.BinaryType):
        return "B"
    if isinstance(dtype, _NUMERIC):
        return "N"
    return None


_SET_OF = {"S": "SS", "N": "NS", "B": "BS"}


def _leaf_needs(dtype: T.DataType, path: str) -> Tuple[Set[str], Set[str]]:
    """(tags needed at the leaf value, tags needed in elements of its L) for a target Spark type."""
    tag = _tag_for(dtype)
    if tag:
        return {tag}, set()
    elem = _tag_for(dtype.elementType) if isinstance(dtype, T.ArrayType) else None
    if elem:
        return {"L"} | ({_SET_OF[elem]} if elem in _SET_OF else set()), {elem}
    raise UsageError(
        f"{path}: type {dtype.simpleString()} is not supported; use string, boolean, binary, a numeric type, "
        f"or an array of string, numeric, binary or boolean")


def _wrapper_schema(needs: List[Set[str]], depth: int) -> T.StructType:
    """The struct one DynamoDB value parses into at ``depth``: only the tags some path needs there."""
    tags = needs[depth]
    fields = [T.StructField(tag, dtype) for tag, dtype in _SCALAR_FIELDS if tag in tags]
    fields += [T.StructField(tag, T.ArrayType(T.StringType())) for tag in _SET_FIELDS if tag in tags]
    if "M" in tags:
        fields.append(T.StructField("M", T.MapType(T.StringType(), _wrapper_schema(needs, depth + 1))))
    if "L" in tags:
        fields.append(T.StructField("L", T.ArrayType(_wrapper_schema(needs, depth + 1))))
    return T.StructType(fields)


def _convert(tag: str, raw: Column, dtype: T.DataType) -> Column:
    """A scalar's JSON value (or a set member) as ``dtype``."""
    if tag == "B":
        return F.unbase64(raw)
    if tag == "N":
        return raw.cast(dtype)
    return raw


def _leaf(v: Column, dtype: T.DataType) -> Column:
    tag = _tag_for(dtype)
    if tag:
        return _convert(tag, v.getField(tag), dtype)
    elem_type = dtype.elementType  # an ArrayType of a scalar: _leaf_needs let only those through
    elem = _tag_for(elem_type)
    lst = v.getField("L")
    from_list = F.when(F.forall(lst, lambda e: e.getField(elem).isNotNull()),
                       F.transform(lst, lambda e: _convert(elem, e.getField(elem), elem_type)))
    if elem not in _SET_OF:
        return from_list
    from_set = F.transform(v.getField(_SET_OF[elem]), lambda m: _convert(elem, m, elem_type))
    return F.coalesce(from_set, from_list)


def project(df: DataFrame, mapping: Mapping[str, str], item_col: str = layout.ITEM) -> DataFrame:
    """``df`` plus one typed column per ``mapping`` entry (path -> Spark type), read from ``item_col``.

    See the module docstring for the path syntax and the supported types. An existing column of the same name is
    replaced. Raises :class:`ddbvault.errors.UsageError` for a bad path or an unsupported type.
    """
    if not mapping:
        return df
    probe = df.limit(0).select([F.lit(None).cast(t).alias(f"c{i}") for i, t in enumerate(mapping.values())])
    targets: List[Tuple[str, List[Step], T.DataType]] = []
    needs: List[Set[str]] = []

    def need(depth: int, *tags: str) -> None:
        while len(needs) <= depth + 1:
            needs.append(set())
        needs[depth].update(tags)

    for (name, _), field in zip(mapping.items(), probe.schema.fields):
        steps = parse_path(name)
        leaf, elem = _leaf_needs(field.dataType, name)
        for depth, step in enumerate(steps[1:]):
            need(depth, "L" if isinstance(step, int) else "M")
        need(len(steps) - 1, *leaf)
        need(len(steps), *elem)
        targets.append((name, steps, field.dataType))

    schema = T.MapType(T.StringType(), _wrapper_schema(needs, 0))
    parsed = df.withColumn(_PARSED, F.from_json(F.col(item_col), schema))
    columns: Dict[str, Column] = {}
    for name, steps, dtype in targets:
        v: Any = F.try_element_at(F.col(_PARSED), F.lit(steps[0]))
        for step in steps[1:]:
            if isinstance(step, int):
                v = F.try_element_at(v.getField("L"), F.lit(step + 1))
            else:
                v = F.try_element_at(v.getField("M"), F.lit(step))
        columns[name] = _leaf(v, dtype)
    return parsed.withColumns(columns).drop(_PARSED)
