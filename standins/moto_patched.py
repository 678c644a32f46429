"""moto server with one fix: segmented Scans of tables whose hash key is binary (B).

Why: moto 5.2.5 assigns an item to a Scan segment in ``Item.is_within_segment``
(``moto/dynamodb/models/dynamo_type.py``) with ``md5_hash(self.hash_key.value.encode("utf8"))``. A B key's value is
``bytes`` there, which has no ``encode``, so every segmented Scan of such a table fails with HTTP 500, while
DynamoDB scans those tables like any other. ddbvault's export, repair and verify always scan in segments.

This launcher replaces that one method with the same hash over the key's raw bytes (S and N keys are hashed
exactly as before, so their segments do not change) and then runs moto's own server main with the arguments it
was given, the ones ``moto_server`` takes:

    python standins/moto_patched.py -H 127.0.0.1 -p 5000

Written against moto 5.2.5 (the version the tests pin); a newer moto that hashes B keys itself makes it moot.
"""
from __future__ import annotations

import sys
from typing import Any, Tuple, Union

PATCHED_FOR = "5.2.5"


def is_within_segment(self: Any, segments: Union[Tuple[None, None], Tuple[int, int]]) -> bool:
    """moto's ``Item.is_within_segment`` (5.2.5), hashing a binary key's bytes as they are."""
    from moto.utilities.utils import md5_hash

    if segments == (None, None):
        return True
    segment, total_segments = segments
    value = self.hash_key.value
    raw = value if isinstance(value, (bytes, bytearray)) else str(value).encode("utf8")
    return md5_hash(bytes(raw)).digest()[0] % total_segments == segment


def patch() -> None:
    """Put the fixed method on moto's DynamoDB item class (in this process)."""
    import moto
    from moto.dynamodb.models.dynamo_type import Item

    if moto.__version__ != PATCHED_FOR:
        print(f"moto_patched: written for moto {PATCHED_FOR}, running {moto.__version__}: check whether "
              f"Item.is_within_segment still needs the binary-key fix", file=sys.stderr)
    Item.is_within_segment = is_within_segment


def main(argv: Any = None) -> None:
    from moto.server import main as moto_main

    patch()
    moto_main(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
