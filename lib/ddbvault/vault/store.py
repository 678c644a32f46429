"""Small JSON files beside the items table (format stamp, table description, run history, markers).

Driver and executors use the same code: boto3 for ``s3://`` / ``s3a://`` vaults (endpoint from
``AWS_ENDPOINT_URL_S3``), the local filesystem for plain paths. The items themselves go through Delta.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, List, Optional, Tuple
from urllib.parse import urlparse

from botocore.exceptions import BotoCoreError, ClientError

from ddbvault import aws
from ddbvault.errors import VaultError
from ddbvault.vault import layout

S3_SCHEMES = ("s3", "s3a", "s3n")


def split_s3(uri: str) -> Optional[Tuple[str, str]]:
    """(bucket, key) of an S3 URI, or None for a local path."""
    parsed = urlparse(uri)
    if parsed.scheme in S3_SCHEMES:
        return parsed.netloc, parsed.path.lstrip("/")
    return None


def local_path(uri: str) -> str:
    return urlparse(uri).path if uri.startswith("file:") else uri


def s3_client(region: Optional[str]):
    return aws.client("s3", region or os.environ.get("DDBVAULT_VAULT_REGION"))


def _fail(action: str, uri: str, exc: Exception) -> VaultError:
    detail = exc.response["Error"].get("Code", "") if isinstance(exc, ClientError) else type(exc).__name__
    return VaultError(f"cannot {action} {uri} ({detail}: {exc}); check the vault URI, its region "
                      f"(--vault-region) and that this role may read and write it")


def read_text(uri: str, region: Optional[str] = None) -> Optional[str]:
    """The file's text, or None when it does not exist."""
    s3 = split_s3(uri)
    try:
        if s3:
            try:
                body = s3_client(region).get_object(Bucket=s3[0], Key=s3[1])["Body"].read()
            except ClientError as exc:
                if exc.response["Error"].get("Code") in ("NoSuchKey", "404"):
                    return None
                raise
            return body.decode("utf-8")
        path = local_path(uri)
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (ClientError, BotoCoreError, OSError) as exc:
        raise _fail("read", uri, exc) from exc


def write_text(uri: str, text: str, region: Optional[str] = None) -> None:
    """Write the whole file at once (S3 PUT is atomic; locally a rename makes it so)."""
    s3 = split_s3(uri)
    try:
        if s3:
            s3_client(region).put_object(Bucket=s3[0], Key=s3[1], Body=text.encode("utf-8"),
                                   ContentType="application/json")
            return
        path = local_path(uri)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except (ClientError, BotoCoreError, OSError) as exc:
        raise _fail("write", uri, exc) from exc


def put_file(local: str, uri: str, region: Optional[str] = None) -> None:
    """Copy a local file to ``uri`` whole (S3: one upload, multipart when large; locally a rename into place)."""
    s3 = split_s3(uri)
    try:
        if s3:
            s3_client(region).upload_file(local, s3[0], s3[1])
            return
        import shutil

        path = local_path(uri)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
        os.close(fd)
        shutil.copyfile(local, tmp)
        os.replace(tmp, path)
    except (ClientError, BotoCoreError, OSError) as exc:
        raise _fail("write", uri, exc) from exc


def read_json(uri: str, region: Optional[str] = None) -> Optional[Any]:
    text = read_text(uri, region)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise VaultError(f"{uri} is damaged: it is not valid JSON ({exc}); put back an earlier copy of it (S3 "
                         f"versioning keeps them), or start a new vault path with export_table") from exc


def write_json(uri: str, value: Any, region: Optional[str] = None) -> None:
    write_text(uri, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n", region)


def list_names(uri: str, region: Optional[str] = None) -> List[str]:
    """Names directly below ``uri`` (files and folders), sorted; empty when it does not exist."""
    s3 = split_s3(uri)
    try:
        if s3:
            bucket, prefix = s3[0], (s3[1].rstrip("/") + "/") if s3[1] else ""
            names = set()
            paginator = s3_client(region).get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
                names.update(c["Prefix"][len(prefix):].rstrip("/") for c in page.get("CommonPrefixes", []))
                names.update(o["Key"][len(prefix):] for o in page.get("Contents", []))
            return sorted(n for n in names if n)
        path = local_path(uri)
        return sorted(os.listdir(path)) if os.path.isdir(path) else []
    except (ClientError, BotoCoreError, OSError) as exc:
        raise _fail("list", uri, exc) from exc


def delete_tree(uri: str, region: Optional[str] = None) -> None:
    """Remove everything under ``uri`` (a folder of scratch files); missing is fine."""
    s3 = split_s3(uri)
    try:
        if s3:
            client = s3_client(region)
            prefix = s3[1].rstrip("/") + "/"
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3[0], Prefix=prefix):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=s3[0], Delete={"Objects": keys, "Quiet": True})
            return
        import shutil

        shutil.rmtree(local_path(uri), ignore_errors=True)
    except (ClientError, BotoCoreError, OSError) as exc:
        raise _fail("delete", uri, exc) from exc


def delta_table_exists(uri: str, region: Optional[str] = None) -> bool:
    """Whether a Delta table has a commit at ``uri``, asked of the store itself: Spark's Delta caches what it saw of
    a path, so a table another process created a moment ago can look absent through it for minutes."""
    return any(n.endswith(".json") or n.endswith(".checkpoint.parquet")
               for n in list_names(layout.join(uri, "_delta_log"), region))
