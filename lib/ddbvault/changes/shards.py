"""Which shards of a stream to read, from where, and in what lineage generation: pure planning, no I/O.

The checkpoint a merge commits holds, per shard it has seen, its generation (lineage depth), its parent, the
last SequenceNumber applied and whether the shard is finished (closed and read to its end). Planning the next
read from the current shard tree (DescribeStream) and that checkpoint either gives one task per shard to read,
or refuses with :class:`StreamGapError` when records the vault needs can no longer be read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ddbvault.errors import StreamGapError

NEW_EXPORT = "run export_table for a new full copy, then merge_increments again"


@dataclass(frozen=True)
class ShardTask:
    """Read ``shard_id`` from ``start`` (TRIM_HORIZON, AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER ``seq``)."""

    shard_id: str
    generation: int
    start: str
    seq: Optional[str]
    closed: bool


def _generation(shard_id: str, tree: Mapping[str, Mapping[str, Any]], known: Mapping[str, Mapping[str, Any]],
                first: bool, memo: Dict[str, int]) -> int:
    if shard_id in memo:
        return memo[shard_id]
    if shard_id in known:
        memo[shard_id] = int(known[shard_id]["gen"])
        return memo[shard_id]
    parent = tree[shard_id].get("ParentShardId")
    if parent in tree or parent in known:
        gen = _generation(parent, tree, known, first, memo) + 1
    elif parent is None or first:
        gen = 0  # a root of the tree we can see (its parent, if any, aged out before the vault needed it)
    else:
        raise StreamGapError(f"shard {shard_id} descends from shard {parent}, which this vault never read and the "
                        f"stream no longer holds (records older than 24 hours are trimmed): {NEW_EXPORT}")
    memo[shard_id] = gen
    return gen


def plan(shards: Sequence[Mapping[str, Any]], checkpoint: Optional[Mapping[str, Mapping[str, Any]]]
         ) -> List[ShardTask]:
    """Tasks for every shard to read now. ``checkpoint`` None: the first merge after an export (read all from
    TRIM_HORIZON); else the committed per-shard state ``{shard_id: {gen, parent, seq, done}}``."""
    tree = {s["ShardId"]: s for s in shards}
    known = dict(checkpoint or {})
    first = checkpoint is None
    for shard_id, state in known.items():
        if shard_id not in tree and not state.get("done"):
            raise StreamGapError(f"shard {shard_id}, read up to sequence number {state.get('seq')} by the last merge, "
                            f"is no longer in the stream: its remaining records were trimmed (more than 24 hours "
                            f"since the last merge?): {NEW_EXPORT}")
    memo: Dict[str, int] = {}
    tasks = []
    for shard_id in sorted(tree):
        state = known.get(shard_id)
        if state is not None and state.get("done"):
            continue
        gen = _generation(shard_id, tree, known, first, memo)
        closed = bool((tree[shard_id].get("SequenceNumberRange") or {}).get("EndingSequenceNumber"))
        if state is not None and state.get("seq"):
            tasks.append(ShardTask(shard_id, gen, "AFTER_SEQUENCE_NUMBER", str(state["seq"]), closed))
        elif first:
            tasks.append(ShardTask(shard_id, gen, "TRIM_HORIZON", None, closed))
        else:
            # Not TRIM_HORIZON: starting at the shard's first number makes DynamoDB answer
            # TrimmedDataAccessException if any of it aged out, instead of silently skipping it.
            start = (tree[shard_id].get("SequenceNumberRange") or {}).get("StartingSequenceNumber")
            tasks.append(ShardTask(shard_id, gen, "AT_SEQUENCE_NUMBER" if start else "TRIM_HORIZON",
                                   str(start) if start else None, closed))
    return tasks


def next_checkpoint(shards: Sequence[Mapping[str, Any]], checkpoint: Optional[Mapping[str, Mapping[str, Any]]],
                    tasks: Sequence[ShardTask], positions: Mapping[str, Mapping[str, Any]]
                    ) -> Dict[str, Dict[str, Any]]:
    """The checkpoint after reading ``tasks``: each shard's generation, parent, last sequence number read and
    whether it is finished. Finished shards that left the stream are dropped (their children know their
    generation); every other shard of the tree is kept."""
    tree = {s["ShardId"]: s for s in shards}
    out: Dict[str, Dict[str, Any]] = {}
    for shard_id, state in (checkpoint or {}).items():
        if shard_id in tree:
            out[shard_id] = dict(state)
    for task in tasks:
        pos = positions.get(task.shard_id)
        if pos is None:
            raise ValueError(f"no position came back for shard {task.shard_id}")
        previous = out.get(task.shard_id, {})
        seq = pos.get("last_seq") or previous.get("seq")
        out[task.shard_id] = {"gen": task.generation, "parent": tree[task.shard_id].get("ParentShardId"),
                              "seq": seq, "done": bool(pos.get("done"))}
    return out
