"""The item codec: DynamoDB JSON to the vault's row and back, exactly.

An item is the low-level form (``{"name": {"S": "x"}, "n": {"N": "1.5"}, ...}``) that the boto3 client, DynamoDB
Streams, Lambda events and DynamoDB's S3 export all carry. The vault stores it as *canonical text*:

- compact JSON (``separators=(",", ":")``), ``ensure_ascii=False``, map keys sorted by code point;
- numbers in DynamoDB's own canonical text (see :func:`normalize_number`);
- binaries as standard, padded base64 (as in DynamoDB's S3 export);
- set members sorted by their canonical text (code point order); a set is never empty and a member that repeats
  after normalisation (``["1.5", "1.50"]``) is an error, as the service rejects it.

Two equal items give byte-identical text, so a hash of the text (:func:`item_hash`, or Spark's ``sha2`` on the
``item`` column) compares items.

Input binaries may be ``bytes``/``bytearray`` (the low-level client) or base64 strings (stream records, Lambda
events, S3 exports); both give the same text. :func:`decode_item` returns the low-level client form (binaries as
``bytes``, numbers as ``str``, sets as lists) ready for PutItem/BatchWriteItem.

Numbers never pass through float, :mod:`decimal` or boto3's TypeDeserializer (whose 38-digit context raises on
valid values such as ``10**38``): they are normalised with string arithmetic.

Invalid input raises :class:`ItemCodecError` naming the attribute path, e.g. ``profile.tags[3]``; a name that is
not a plain word is written as a JSON string in brackets: ``profile["first.name"]`` (the same syntax
:func:`ddbvault.query.project` takes).
"""
from __future__ import annotations

import binascii
import hashlib
import json
import re
from json.encoder import c_make_encoder as _c_make_encoder
from json.encoder import encode_basestring as _encode_basestring
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ddbvault.errors import DdbVaultError

MAX_DEPTH = 32          # DynamoDB: 31 map/list wrappers above a value are accepted, 32 are rejected
MAX_DIGITS = 38         # significant digits of a number
MAX_EXPONENT = 125      # 9.99..E+125 is the largest magnitude
MIN_EXPONENT = -130     # 1E-130 is the smallest non-zero magnitude

SCALAR_KEY_TAGS = ("S", "N", "B")


class ItemCodecError(DdbVaultError, ValueError):
    """An item (or a value) is not valid DynamoDB JSON; ``path`` names the attribute, ``reason`` what is wrong."""

    def __init__(self, reason: str, path: str = ""):
        self.reason = reason
        self.path = path
        where = f"attribute {path}" if path else "item"
        super().__init__(f"invalid DynamoDB {where}: {reason}")


class _Invalid(Exception):
    """Raised deep in the walk; each enclosing level adds its path step on the way out (cheap on the happy path)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
        self.steps: List[Any] = []   # innermost first: str = map key / attribute name, int = list index


_PLAIN_NAME = re.compile(r"[^.\[\]\"\s](?:[^.\[\]\"]*[^.\[\]\"\s])?\Z")  # no . [ ] " nor edge spaces


def format_path(steps: List[Any]) -> str:
    """``["profile", "tags", 3]`` -> ``profile.tags[3]``; a name holding ``.``, ``[``, ``]`` or ``"``, or starting
    or ending with a space (or empty), goes in brackets as a JSON string: ``profile["a.b"]``."""
    out: List[str] = []
    for step in steps:
        if isinstance(step, int):
            out.append(f"[{step}]")
        elif _PLAIN_NAME.match(step):
            out.append(("." if out else "") + step)
        else:
            out.append("[" + json.dumps(step, ensure_ascii=False) + "]")
    return "".join(out)


def _path_of(err: _Invalid, *outer: Any) -> str:
    return format_path([*outer, *reversed(err.steps)])


# ---------------------------------------------------------------------------------------------------------------
# Numbers

_NUMBER = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?(?:[eE]([+-]?[0-9]+))?\Z")


def _plain_number_size(s: str) -> int:  # noqa: PLR0911 - early outs on the hot path
    """The size of ``s`` if it is a canonical number of at most 38 characters (so surely in range), else 0.

    The common shapes (``123``, ``-45``, ``12.5``, ``-0.25``) without a regex: this runs for most numbers."""
    if len(s) > MAX_DIGITS or not s:
        return 0
    if s.isdigit():
        if s.isascii() and (s[0] != "0" or len(s) == 1):
            return ((len(s.rstrip("0")) or 1) + 1) // 2 + 1
        return 0
    body = s[1:] if s[0] == "-" else s
    whole, dot, frac = body.partition(".")
    if dot:
        if whole.isdigit() and frac.isdigit() and body.isascii() and frac[-1] != "0":
            if whole[0] != "0":
                return (len(whole) + len(frac) + 1) // 2 + 1
            if len(whole) == 1:
                return (len(frac.lstrip("0")) + 1) // 2 + 1
        return 0
    if body.isdigit() and body.isascii() and body[0] != "0":
        return (len(body.rstrip("0")) + 1) // 2 + 1
    return 0


def _number(text: Any) -> str:
    """Canonical text of a DynamoDB number, or :class:`_Invalid`."""
    if text.__class__ is not str:
        raise _Invalid(f"a number travels as a string, got {type(text).__name__}")
    if _plain_number_size(text):  # already canonical, and short enough to be surely in range
        return text
    m = _NUMBER.match(text)
    if m is None:
        raise _Invalid(f"not a number: {text[:60]!r}")
    sign, whole, frac, exp = m.groups()
    frac = frac or ""
    if not whole and not frac:
        raise _Invalid(f"not a number: {text[:60]!r}")
    digits = (whole + frac).lstrip("0")
    if not digits:
        return "0"
    significant = digits.rstrip("0")
    n = len(significant)
    if n > MAX_DIGITS:
        raise _Invalid(f"{n} significant digits in {text[:60]!r}; DynamoDB keeps at most {MAX_DIGITS}")
    if exp:
        exp_digits = exp.lstrip("+-").lstrip("0")
        if len(exp_digits) > 9:  # far outside the range; also keeps int() away from giant strings
            raise _Invalid(f"number {'overflow' if exp[0] != '-' else 'underflow'}: {text[:60]!r} is outside "
                           f"1E{MIN_EXPONENT}..9.9{'9' * (MAX_DIGITS - 2)}E+{MAX_EXPONENT}")
        e10 = int(exp)
    else:
        e10 = 0
    # value = significant * 10**scale
    scale = e10 - len(frac) + (len(digits) - n)
    magnitude = n - 1 + scale  # the exponent in d.ddd x 10^magnitude
    if magnitude > MAX_EXPONENT or magnitude < MIN_EXPONENT:
        raise _Invalid(f"number {'overflow' if magnitude > 0 else 'underflow'}: {text[:60]!r} is outside "
                       f"1E{MIN_EXPONENT}..9.9{'9' * (MAX_DIGITS - 2)}E+{MAX_EXPONENT}")
    neg = "-" if sign == "-" else ""
    if scale >= 0:
        return neg + significant + "0" * scale
    point = n + scale  # digits before the decimal point
    if point > 0:
        return neg + significant[:point] + "." + significant[point:]
    return neg + "0." + "0" * (-point) + significant


def normalize_number(text: str, path: str = "") -> str:
    """The one canonical text of a DynamoDB number: the text the service itself returns.

    Accepted input: an optional sign, digits with an optional decimal point, an optional ``e``/``E`` exponent
    (``"1.50"``, ``"-0"``, ``"1e2"``, ``".5"``, ``"5."``, ``"+3"``). At most 38 significant digits (leading and
    trailing zeros do not count) and a magnitude within 1E-130 .. 9.9999999999999999999999999999999999999E+125,
    positive or negative, or zero.

    Canonical output (decision): plain decimal notation, never an exponent, no leading zeros before the first
    integer digit, no trailing zeros after the decimal point, no point when there is no fraction, no ``+``, and
    ``0`` for every zero (``"-0"`` and ``"0.00e5"`` included). So ``"1.50"`` -> ``"1.5"``, ``"1e2"`` -> ``"100"``,
    ``"1E+125"`` -> ``"1"`` followed by 125 zeros, ``"1E-130"`` -> ``"0."`` + 129 zeros + ``"1"``.
    This is what DynamoDB returns: the service trims zeros and answers exponent input in plain notation (boto3
    issue #4636: ``"1.00000000000000007629769841092E+50"`` was stored and read back as
    ``"100000000000000007629769841092000000000000000000000"``; boto3 issue #2500: ``1e100`` comes back as a 1 and
    100 zeros), and dynalite (the npm emulator whose validation is modelled on the service,
    ``validations/index.js`` ``checkNum``) stores every number as ``Big(value).toFixed()``, this same form. The longest
    canonical text is 170 characters (``-0.``, 129 zeros, 38 digits).

    Raises :class:`ItemCodecError` naming ``path`` for bad syntax, more than 38 digits, or a magnitude out of range.
    """
    try:
        return _number(text)
    except _Invalid as err:
        raise ItemCodecError(err.reason, path) from None


# ---------------------------------------------------------------------------------------------------------------
# Encoding (validate + canonicalise + size, one walk)

_b2a = binascii.b2a_base64
_a2b = binascii.a2b_base64
_STRICT_B64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?\Z")


def _utf8_len(text: str) -> int:
    if text.isascii():
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise _Invalid("string holds a lone surrogate, which is not valid Unicode (UTF-8)") from None


def _binary(val: Any) -> Tuple[str, int]:
    """(canonical base64 text, raw length) of a binary given as bytes or as base64 text."""
    cls = val.__class__
    if cls is bytes or cls is bytearray or isinstance(val, (bytes, bytearray, memoryview)):
        return _b2a(val, newline=False).decode("ascii"), len(val) if cls is not memoryview else val.nbytes
    if cls is str or isinstance(val, str):
        # Lenient decoding, then a strict check: only canonical base64 (standard alphabet, padded, zero
        # trailing bits, no whitespace) re-encodes to the very same text.
        try:
            raw = _a2b(val)
            text = _b2a(raw, newline=False).decode("ascii")
        except (binascii.Error, ValueError):
            text = None
        if text == val:
            return text, len(raw)
        if text is not None and _STRICT_B64.match(val):
            raise _Invalid(f"non-canonical base64 binary {val[:60]!r} (expected {text[:60]!r})")
        raise _Invalid(f"bad base64 binary {val[:60]!r} (standard alphabet, padded)")
    raise _Invalid(f"a binary is bytes or a base64 string, got {type(val).__name__}")


def _members(val: Any, tag: str) -> Any:
    if val.__class__ is list or isinstance(val, (list, tuple, set, frozenset)):
        if not val:
            raise _Invalid(f"empty {tag} set; DynamoDB sets hold at least one member")
        return val
    raise _Invalid(f"{tag} takes a list of members, got {type(val).__name__}")


def _set_of(out: List[str], tag: str) -> List[str]:
    out.sort()
    prev = None
    for member in out:
        if member == prev:
            raise _Invalid(f"{tag} set holds {member[:60]!r} twice (after normalisation); set members are unique")
        prev = member
    return out


def _number_size(canon: str) -> int:
    """DG "Item sizes and formats": 1 byte per two significant digits, plus 1 (zero counts as one digit)."""
    if canon[0] == "-":
        canon = canon[1:]
    if "." in canon:  # canonical: no trailing zeros; leading zeros only in 0.00ddd
        n = len(canon.replace(".", "").lstrip("0"))
    else:
        n = len(canon.rstrip("0")) or 1
    return (n + 1) // 2 + 1


# The walk below inlines the S, N and M cases (most values of most items) into the container loops; every other
# value, and any S/N that is not plainly valid, goes through _value. Canonical values reuse the input's dicts.

def _fields(val: Any, depth: int) -> Tuple[Dict[str, Any], int]:
    """(canonical map, sum of key + value sizes) of an item (depth 1) or an M's contents (depth > 1)."""
    out = {}
    size = 0
    try:
        keys = sorted(val)  # code point order: the encoder then needs no sort_keys
    except TypeError:
        bad = next(k for k in val if k.__class__ is not str)
        err = _Invalid(f"{'attribute name' if depth == 1 else 'map key'} {bad!r} is not a string")
        err.steps.append(repr(bad))
        raise err from None
    for key in keys:
        sub = val[key]
        try:
            if key.__class__ is not str:
                raise _Invalid(f"{'attribute name' if depth == 1 else 'map key'} {key!r} is not a string")
            size += len(key) if key.isascii() else _utf8_len(key)
            if sub.__class__ is dict and len(sub) == 1:
                s = sub.get("S")
                if s.__class__ is str:
                    size += len(s) if s.isascii() else _utf8_len(s)
                    out[key] = sub
                    continue
                s = sub.get("N")
                if s.__class__ is str:
                    ns = _plain_number_size(s)
                    if ns:
                        size += ns
                        out[key] = sub
                        continue
                m = sub.get("M")
                if m.__class__ is dict and depth < MAX_DEPTH:
                    m, ms = _fields(m, depth + 1)
                    size += 3 + len(m) + ms
                    out[key] = {"M": m}
                    continue
            cv, vs = _value(sub, depth)
        except _Invalid as err:
            err.steps.append(key if isinstance(key, str) else repr(key))
            raise
        out[key] = cv
        size += vs
    return out, size


def _elements(val: Any, depth: int) -> Tuple[List[Any], int]:
    """(canonical list, sum of element sizes) of an L's contents at ``depth``."""
    out = []
    size = 0
    for i, sub in enumerate(val):
        try:
            if sub.__class__ is dict and len(sub) == 1:
                s = sub.get("S")
                if s.__class__ is str:
                    size += len(s) if s.isascii() else _utf8_len(s)
                    out.append(sub)
                    continue
                s = sub.get("N")
                if s.__class__ is str:
                    ns = _plain_number_size(s)
                    if ns:
                        size += ns
                        out.append(sub)
                        continue
                m = sub.get("M")
                if m.__class__ is dict and depth < MAX_DEPTH:
                    m, ms = _fields(m, depth + 1)
                    size += 3 + len(m) + ms
                    out.append({"M": m})
                    continue
            cv, vs = _value(sub, depth)
        except _Invalid as err:
            err.steps.append(i)
            raise
        out.append(cv)
        size += vs
    return out, size


def _value(v: Any, depth: int) -> Tuple[Any, int]:  # noqa: PLR0911 - one return per type tag
    """(canonical value, DynamoDB size without the name) of one attribute value at nesting ``depth`` (1 = top)."""
    if v.__class__ is not dict:
        if not isinstance(v, Mapping):
            raise _Invalid(f"an attribute value is a mapping like {{\"S\": \"x\"}}, got {type(v).__name__}")
        v = dict(v)
    if len(v) != 1:
        if not v:
            raise _Invalid("no type tag (empty attribute value)")
        raise _Invalid(f"more than one type tag: {sorted(map(str, v))}")
    ((tag, val),) = v.items()
    if tag == "S":
        if val.__class__ is not str:
            raise _Invalid(f"S holds {type(val).__name__}, not a string")
        return v, (len(val) if val.isascii() else _utf8_len(val))
    if tag == "N":
        canon = _number(val)
        return (v if canon is val else {"N": canon}), _number_size(canon)
    if tag == "M":
        if val.__class__ is not dict and not isinstance(val, Mapping):
            raise _Invalid(f"M holds {type(val).__name__}, not a map")
        if depth >= MAX_DEPTH:
            raise _Invalid(f"nesting deeper than {MAX_DEPTH} levels")
        out, size = _fields(val, depth + 1)
        return {"M": out}, 3 + len(out) + size  # 3 bytes, plus 1 per element
    if tag == "L":
        if val.__class__ is not list and not isinstance(val, (list, tuple)):
            raise _Invalid(f"L holds {type(val).__name__}, not a list")
        if depth >= MAX_DEPTH:
            raise _Invalid(f"nesting deeper than {MAX_DEPTH} levels")
        out_l, size = _elements(val, depth + 1)
        return {"L": out_l}, 3 + len(out_l) + size
    if tag == "BOOL":
        if val is True or val is False:
            return v, 1
        raise _Invalid(f"BOOL holds {val!r}, not true or false")
    if tag == "NULL":
        if val is True:
            return v, 1
        raise _Invalid(f"NULL holds {val!r}; it must be true")
    if tag == "B":
        text, size = _binary(val)
        return (v if text is val else {"B": text}), size
    if tag == "SS":
        size = 0
        for i, member in enumerate(_members(val, tag)):
            if member.__class__ is not str:
                raise _Invalid(f"SS member {i} is {type(member).__name__}, not a string")
            size += len(member) if member.isascii() else _utf8_len(member)
        return {"SS": _set_of(list(val), tag)}, size
    if tag == "NS":
        size = 0
        canon_members = []
        for member in _members(val, tag):
            canon = _number(member)
            canon_members.append(canon)
            size += _number_size(canon)
        return {"NS": _set_of(canon_members, tag)}, size
    if tag == "BS":
        size = 0
        texts = []
        for member in _members(val, tag):
            text, s = _binary(member)
            texts.append(text)
            size += s
        return {"BS": _set_of(texts, tag)}, size
    raise _Invalid(f"unknown type tag {str(tag)[:20]!r} (one of S, N, B, SS, NS, BS, M, L, NULL, BOOL)")


def _item(item: Any) -> Tuple[Dict[str, Any], int]:
    """(canonical item, DynamoDB item size) or :class:`ItemCodecError` naming the attribute."""
    if item.__class__ is not dict and not isinstance(item, Mapping):
        raise ItemCodecError(f"an item is a mapping of attribute names to values, got {type(item).__name__}")
    try:
        return _fields(item, 1)
    except _Invalid as err:
        raise ItemCodecError(err.reason, _path_of(err)) from None


# Map keys are already in order (the walk sorts them): sort_keys would re-sort every one-key type wrapper too.
# The C encoder is built once (JSONEncoder.encode builds one per call); same output as
# json.dumps(obj, ensure_ascii=False, separators=(",", ":"), check_circular=False).
if _c_make_encoder is not None:
    _c_encode = _c_make_encoder(None, None, _encode_basestring, None, ":", ",", False, False, True)

    def _dumps(obj: Any) -> str:
        return "".join(_c_encode(obj, 0))
else:  # pragma: no cover - interpreters without the _json accelerator
    _dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


def compact_json(value: Any) -> str:
    """``value`` as compact JSON text, non-ASCII characters as they are: the encoder of the item text, built once
    (``json.dumps`` with these settings builds an encoder per call)."""
    return _dumps(value)


def encode_item(item: Mapping[str, Mapping]) -> str:
    """Canonical DynamoDB-JSON text of ``item`` (validated); see the module docstring for the form."""
    return _dumps(_item(item)[0])


def item_size(item: Mapping) -> int:
    """DynamoDB's size of ``item`` in bytes, per the Developer Guide ("DynamoDB item sizes and formats").

    Sum over attributes of the UTF-8 length of the name plus the value's size: S its UTF-8 length; B its raw
    length; N ``(significant digits + 1) // 2 + 1`` (the guide: "1 byte per two significant digits + 1 byte";
    zero counts as one digit); BOOL and NULL 1; M and L 3 bytes plus, per element, 1 byte plus
    the element's size (a map element also counts its key's UTF-8 length); SS/NS/BS the sum of their members' sizes.
    The guide calls the number size approximate: dynalite refines it by exponent parity (digits pair up around
    the decimal point), which can add one byte per number; use this figure for WCU pacing and the 16 MB batch
    cap, not to reproduce the service's 400 KB check to the byte. Validates like :func:`encode_item`.
    """
    return _item(item)[1]


def to_vault_record(item: Mapping, hash_key: str, range_key: Optional[str]) -> Tuple[str, Optional[str], str, int]:
    """``(pk, sk, item_text, size)`` of ``item`` in one walk: the export's hot path.

    ``pk``/``sk`` are the canonical key strings (see :func:`key_value`); ``sk`` is None when ``range_key`` is None.
    A missing key attribute or one that is not an S, N or B scalar raises :class:`ItemCodecError` naming it.
    """
    out, size = _item(item)
    pk = _key_of(out, hash_key)
    sk = None if range_key is None else _key_of(out, range_key)
    return pk, sk, _dumps(out), size


def _key_of(out: Mapping[str, Any], name: str) -> str:
    cv = out.get(name)
    if cv is None:
        raise ItemCodecError("key attribute is missing from the item", format_path([name]))
    for tag, val in cv.items():
        if tag in SCALAR_KEY_TAGS:
            if val == "":
                raise ItemCodecError(f"empty {tag} key value; DynamoDB keys are never empty", format_path([name]))
            return val
        raise ItemCodecError(f"a key is an S, N or B scalar, got {tag}", format_path([name]))
    raise ItemCodecError("no type tag", format_path([name]))  # pragma: no cover - _item rejects it first


def key_value(value: Mapping, path: str = "") -> str:
    """Canonical key-column string of an S/N/B scalar: S as is, N canonical, B standard padded base64."""
    try:
        cv, _ = _value(value, 1)
    except _Invalid as err:
        raise ItemCodecError(err.reason, path + format_path(list(reversed(err.steps)))) from None
    for tag, val in cv.items():
        if tag not in SCALAR_KEY_TAGS:
            raise ItemCodecError(f"a key is an S, N or B scalar, got {tag}", path)
        if val == "":
            raise ItemCodecError(f"empty {tag} key value; DynamoDB keys are never empty", path)
        return val
    raise ItemCodecError("no type tag", path)  # pragma: no cover


def item_hash(text: str) -> str:
    """Hex SHA-256 of canonical item text (UTF-8): equals Spark's ``sha2(item, 256)`` on the ``item`` column."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Decoding (vault text -> low-level client form)

_loads = json.loads
_scan_once = json.JSONDecoder().scan_once


def _binaries_to_bytes(v: Any, todo: int) -> int:
    """Turn the base64 text of B and BS wrappers under ``v`` into bytes, in place; stop once ``todo`` are done.
    Returns how many are left. Scalars of a level come before its containers, so a top-level binary is found
    without walking into the maps and lists next to it."""
    containers = []
    for w in (v.values() if v.__class__ is dict else v):
        ((tag, val),) = w.items()
        if tag == "B":
            w["B"] = _a2b(val)
            todo -= 1
        elif tag == "BS":
            w["BS"] = [_a2b(m) for m in val]
            todo -= 1
        elif tag in ("M", "L"):
            if val:
                containers.append(val)
        else:
            continue
        if todo == 0:
            return 0
    for val in containers:
        todo = _binaries_to_bytes(val, todo)
        if todo == 0:
            return 0
    return todo


def decode_item(text: str) -> Dict[str, Any]:
    """The low-level boto3 client form of canonical item text: B and BS members as ``bytes``, N as ``str``,
    sets as lists; ready for PutItem/BatchWriteItem."""
    try:
        item, end = _scan_once(text, 0)  # canonical text has no surrounding whitespace: skip json.loads' checks
    except (StopIteration, ValueError):
        end = -1
    if end != len(text) or item.__class__ is not dict:
        try:
            item = _loads(text)
        except ValueError as err:
            raise ItemCodecError(f"item text is not JSON: {err}") from None
        if item.__class__ is not dict:
            raise ItemCodecError(f"item text holds a {type(item).__name__}, not an item")
    # In compact JSON text '"B":"' and '"BS":[' occur exactly once per binary wrapper: inside a string a quote is
    # escaped, and a map key "B"/"BS" is followed by an object. No binary: nothing to walk.
    todo = text.count('"B":"') + text.count('"BS":[') if '"B' in text else 0
    if todo:
        _binaries_to_bytes(item, todo)
    return item
