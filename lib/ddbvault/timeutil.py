"""Times on the command line: ISO-8601, read as UTC when no offset is given."""
from __future__ import annotations

import argparse
from datetime import datetime, timezone


def parse_time(text: str) -> datetime:
    """An aware UTC datetime from ISO-8601 text (``2026-11-27T04:05:06Z``, ``...+02:00``, or naive = UTC)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-8601 time such as 2026-11-27T04:05:06Z") from None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
