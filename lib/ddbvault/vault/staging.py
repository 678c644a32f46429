"""An export's scan kept segment by segment until its one Delta commit: what makes an export resumable.

A scan of a large table takes hours; a job killed at 60% (a lost driver, a spot reclaim, an operator's stop)
should not read the table again from the start. So every finished segment leaves its rows in the vault at once,
under ``_ddbvault/export-staging/``, and a rerun of the export scans only the segments that have none. The
items table still changes in one commit, made from the staged rows once every segment is there.

- ``manifest.json``: the export being staged: table ARN and creation time, TotalSegments, read consistency, its
  ``source`` (absent for a scan; a DynamoDB export's ARN when its data files are the parts) and
  when the scan started (a resumed export keeps it: the first merge replays the stream from there, so it must
  be less than ~20 hours old while the stream holds 24).
- ``seg-<segment>-<attempt>.json.gz``: one segment, written by one task attempt, as the manifest's ``staged_as``
  says: ``pages`` (a scan with the JVM codec: a line per Scan page, the JSON array of its items exactly as
  DynamoDB sent it, turned into rows by the JVM at the commit) or ``rows`` (a line per item row, made in Python).
- ``seg-<segment>-<attempt>-<items>-<digest>.done``: empty, written after the rows; its name says the segment is
  finished, which file holds it and what the integrity record needs (pages: the digest is taken at the commit,
  and 0 here), so one listing tells a rerun everything. Two attempts of one segment (a Spark retry, a
  speculative copy) leave two self-consistent pairs; one is used.
"""
from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import re
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

from ddbvault.codec import ItemCodecError, compact_json
from ddbvault.vault import layout, store

log = logging.getLogger(__name__)

STAGING_DIR = "export-staging"
MANIFEST = "manifest.json"
# Older than this, a resumed export could not be completed by the stream (records live 24 hours).
MAX_AGE = timedelta(hours=20)
_DONE = re.compile(r"^seg-(\d+)-([0-9a-f]+)-(\d+)-(\d+)\.done$")

# Staged rows: the columns the export's rows vary in; the rest are the same for the whole export.
PK, SK, ITEM, SIZE, DIGEST = "p", "s", "i", "z", "d"
# How a staging holds its segments (the manifest's ``staged_as``; a manifest without it is ``rows``).
AS_ROWS, AS_PAGES = "rows", "pages"
# The JVM codec (jvm/src/ddbvault/jvm/PageRows.java, in ddbvault-jvm.jar): a staged page to its rows.
JVM_CODEC_CLASS = "ddbvault.jvm.PageRows"
JVM_CODEC_FUNCTION = "ddbvault_page_rows"
JVM_CODEC_MARK = "ddbvault-item-codec: "
PAGE_ROWS_TYPE = f"array<struct<{PK}:string,{SK}:string,{ITEM}:string,{SIZE}:bigint,{DIGEST}:bigint>>"


def root(vault: str) -> str:
    return layout.join(vault, layout.META_DIR, STAGING_DIR)


def stage_schema():
    from pyspark.sql import types as T

    return T.StructType([
        T.StructField(PK, T.StringType(), False),
        T.StructField(SK, T.StringType(), True),
        T.StructField(ITEM, T.StringType(), False),
        T.StructField(SIZE, T.LongType(), False),
        T.StructField(DIGEST, T.LongType(), False),
    ])


def register_jvm_codec(spark) -> bool:
    """Make the JVM codec's SQL function known to ``spark``; False when ddbvault-jvm.jar is not on the classpath
    (``make jvm`` locally; ``--jars`` on EMR), and an export, verify or repair then makes its rows in Python."""
    if spark.catalog.functionExists(JVM_CODEC_FUNCTION):
        return True
    try:
        spark.udf.registerJavaFunction(JVM_CODEC_FUNCTION, JVM_CODEC_CLASS, PAGE_ROWS_TYPE)
    except Exception as exc:  # AnalysisException (class not found) or Py4J's error, by Spark version
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        log.warning("ddbvault's JVM codec (%s in ddbvault-jvm.jar) is not on the classpath (%s): scanned items are "
                    "parsed in Python, at about 1.5x the CPU; add the jar with --jars", JVM_CODEC_CLASS, first)
        return False
    return True


def page_rows(spark, paths: List[str], hash_key: str, range_key: Optional[str]):
    """Staged pages as rows of (p, s, i, z, d), by the JVM codec (registered by :func:`register_jvm_codec`).
    The scan checked that every page is UTF-8 (``aws.RawBytes``), so the text reader replaces nothing."""
    return rows_of_pages(spark.read.text(paths), hash_key, range_key)


def rows_of_pages(pages, hash_key: str, range_key: Optional[str]):
    """A one-column DataFrame of Scan pages (JSON arrays of items, as string or UTF-8 binary) as rows of
    (p, s, i, z, d), by the JVM codec."""
    from pyspark.sql import functions as F

    column = F.col(pages.columns[0]).cast("string")
    rows = F.call_udf(JVM_CODEC_FUNCTION, column, F.lit(hash_key), F.lit(range_key).cast("string"))
    return pages.select(F.explode(rows).alias("r")).select("r.*")


@contextlib.contextmanager
def raising_codec_errors(where: str) -> Iterator[None]:
    """Around a Spark action that runs the JVM codec: an item it refused is raised as the Python codec's
    :class:`ItemCodecError`, naming the attribute, followed by ``where`` (what read the item, what to do)."""
    try:
        yield
    except Exception as exc:
        found = codec_failure(exc)
        if found is None:
            raise
        path, reason = found
        raise ItemCodecError(f"{reason}, in {where}", path) from None


def codec_failure(exc: BaseException) -> Optional[Tuple[str, str]]:
    """(attribute path, reason) from the JVM codec's own message in a failed Spark job's error (None: the job
    failed for another reason)."""
    text = str(exc)
    at = text.find(JVM_CODEC_MARK)
    if at < 0:
        return None
    try:
        found, _ = json.JSONDecoder().raw_decode(text, at + len(JVM_CODEC_MARK))
        return str(found["path"]), str(found["reason"])
    except (ValueError, KeyError, TypeError):
        return "", text[at + len(JVM_CODEC_MARK):].splitlines()[0].strip()


@dataclass(frozen=True)
class Finished:
    """A finished segment: where its rows are and what they hold."""

    segment: int
    data: str
    items: int
    digest: int


def data_name(segment: int, attempt: str) -> str:
    return f"seg-{segment:07d}-{attempt}.json.gz"


def finished(staging: str, region: Optional[str] = None) -> Dict[int, Finished]:
    """Every finished segment under ``staging``, from one listing."""
    out: Dict[int, Finished] = {}
    for name in store.list_names(staging, region):
        match = _DONE.match(name)
        if match:
            segment = int(match.group(1))
            out.setdefault(segment, Finished(segment, layout.join(staging, data_name(segment, match.group(2))),
                                             int(match.group(3)), int(match.group(4))))
    return out


def resume_or_start(vault: str, region: Optional[str], fresh: Dict[str, Any], now: datetime,
                    ) -> Dict[str, Any]:
    """The manifest to work under: the staged export's, when it is this table's, with the same consistency and
    young enough for the stream to complete it; else ``fresh``, after clearing what was staged."""
    where = root(vault)
    found = store.read_json(layout.join(where, MANIFEST), region)
    if found is not None:
        why = None
        if found.get("committed_version") is not None:
            why = f"it was committed as version {found['committed_version']} already"
        elif (found.get("table_arn"), found.get("table_created")) != (fresh["table_arn"], fresh["table_created"]):
            why = "it was of another table (or the table was created anew since)"
        elif found.get("source") != fresh.get("source"):
            why = "it was staged from another source (a scan, or another DynamoDB export)"
        elif found.get("staged_as", AS_ROWS) != fresh.get("staged_as", AS_ROWS):
            why = f"it holds {found.get('staged_as', AS_ROWS)}, and this run stages {fresh.get('staged_as', AS_ROWS)}"
        elif found.get("consistent_read") != fresh["consistent_read"]:
            why = "it used another read consistency"
        elif found.get("stream_arn") != fresh["stream_arn"]:
            why = "the table's stream changed since (the stream would not hold the changes made during its scan)"
        elif now - datetime.fromisoformat(found["scan_started"]) > MAX_AGE:
            why = (f"its scan started at {found['scan_started']}, too long ago for the stream (24 hours) to bring "
                   f"the vault up to date after it")
        if why is None:
            log.info("resuming the export staged by run %s (scan started %s): finished segments are kept",
                     found.get("run_id"), found["scan_started"])
            return found
        log.warning("starting the export afresh, not resuming the staged one: %s", why)
    store.delete_tree(where, region)
    store.write_json(layout.join(where, MANIFEST), fresh, region)
    return fresh


def committed(vault: str, region: Optional[str], manifest: Dict[str, Any], version: int) -> None:
    """The staged export is in the items table now (as ``version``): never resume it, then remove it."""
    store.write_json(layout.join(root(vault), MANIFEST), dict(manifest, committed_version=version), region)
    store.delete_tree(root(vault), region)


def _spill_dir() -> Optional[str]:
    # YARN gives each container its local disks in LOCAL_DIRS; /tmp on an EMR node is the small root volume.
    for name in ("LOCAL_DIRS", "SPARK_LOCAL_DIRS"):
        value = os.environ.get(name)
        if value:
            return value.split(",")[0]
    return None


class SegmentFile:
    """One segment's rows on their way to the vault: gzip JSON lines in a local file, uploaded when the segment
    is finished, then the marker that says so. Executor side."""

    def __init__(self, staging: str, segment: int, region: Optional[str], pages: bool = False) -> None:
        self.staging, self.segment, self.region = staging, segment, region
        self.attempt = uuid.uuid4().hex[:12]
        fd, self.local = tempfile.mkstemp(prefix=f"ddbvault-seg-{segment}-", suffix=".json.gz", dir=_spill_dir())
        os.close(fd)
        self._out = gzip.open(self.local, "wb", compresslevel=1) if pages else \
            gzip.open(self.local, "wt", encoding="utf-8", compresslevel=1, newline="\n")
        self.items = 0
        self.digest = 0

    def add_page(self, items_json: bytes, count: int) -> None:
        """A Scan page's items as DynamoDB sent them (a JSON array), ``count`` of them, as one line (pages)."""
        if b"\n" in items_json or b"\r" in items_json:
            # Outside strings (where they are escaped) line breaks are only spacing between JSON tokens.
            items_json = items_json.replace(b"\n", b" ").replace(b"\r", b" ")
        self._out.write(items_json)
        self._out.write(b"\n")
        self.items += count

    def add(self, pk: str, sk: Optional[str], text: str, size: int, digest: int) -> None:
        self.add_rows([(pk, sk, text, size, digest)])

    def add_rows(self, rows: List[Tuple[str, Optional[str], str, int, int]]) -> None:
        """Rows of (pk, sk, item text, size, digest), in one write (a scan page's: one gzip call, not two a row)."""
        self._out.write("".join([compact_json({PK: pk, SK: sk, ITEM: text, SIZE: size, DIGEST: digest}) + "\n"
                                 for pk, sk, text, size, digest in rows]))
        self.items += len(rows)
        self.digest += sum(row[4] for row in rows)

    def finish(self) -> Finished:
        self._out.close()
        try:
            data = layout.join(self.staging, data_name(self.segment, self.attempt))
            store.put_file(self.local, data, self.region)
            marker = f"seg-{self.segment:07d}-{self.attempt}-{self.items}-{self.digest}.done"
            store.write_text(layout.join(self.staging, marker), "", self.region)
        finally:
            self.discard()
        return Finished(self.segment, data, self.items, self.digest)

    def discard(self) -> None:
        try:
            self._out.close()
        finally:
            if os.path.exists(self.local):
                os.remove(self.local)


def discard_all(files: Iterable[SegmentFile]) -> None:
    for file in list(files):
        file.discard()


def data_paths(done: Dict[int, Finished], total: int) -> List[str]:
    """The staged files of segments 0..total-1, in order; raises if one is missing (the caller's bug or a lost
    file: never commit a partial export)."""
    missing = [s for s in range(total) if s not in done]
    if missing:
        raise ValueError(f"segments {missing[:10]} of {total} have no staged rows")
    return [done[s].data for s in range(total)]
