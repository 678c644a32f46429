"""Table descriptions: capture everything a restore needs, and rebuild a table from it.

DescribeTable alone is not enough: TTL, tags and point-in-time recovery come from their own calls. The capture
is plain JSON (datetimes as ISO text) so it can travel in the vault and be read in another region.
"""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Tuple

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from ddbvault import aws
from ddbvault.errors import TableError, UsageError

log = logging.getLogger(__name__)

NEW_IMAGE_VIEWS = ("NEW_AND_OLD_IMAGES", "NEW_IMAGE")


def _control(region: str):
    return aws.client("dynamodb", region)


def table_error(table: str, region: str, exc: Exception) -> TableError:
    """A TableError that says which table, which region, and what to check."""
    if isinstance(exc, ClientError):
        code = exc.response["Error"].get("Code", "")
        if code == "ResourceNotFoundException":
            return TableError(f"table {table} does not exist in region {region}: check --table and --region")
        if code in ("AccessDeniedException", "UnrecognizedClientException"):
            return TableError(f"access to table {table} in region {region} was denied ({code}): "
                              f"check the job's credentials and IAM policy")
        return TableError(f"DynamoDB refused a request on table {table} in region {region}: {code}: "
                          f"{exc.response['Error'].get('Message', '')}")
    if isinstance(exc, EndpointConnectionError):
        return TableError(f"cannot reach DynamoDB for region {region} ({exc}): check --region, "
                          f"AWS_ENDPOINT_URL_DYNAMODB and the network")
    return TableError(f"DynamoDB call on table {table} in region {region} failed: {exc}")


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v)))


# Answers meaning "this endpoint has no such call" (DynamoDB-compatible stores such as dynalite lack some
# of the optional description calls); a capture records the part as unknown instead of failing the export.
UNSUPPORTED = ("UnknownOperationException", "UnsupportedOperationException", "NotImplementedException")


def _optional(table: str, region: str, what: str, call):
    """The result of an optional description call, or None (with a warning) where the endpoint lacks it."""
    try:
        return call()
    except ClientError as exc:
        if exc.response["Error"].get("Code") in UNSUPPORTED:
            log.warning("%s of table %s in %s is not supported by this endpoint; recorded as unknown, so a "
                        "restore cannot rebuild it", what, table, region)
            return None
        raise


def capture(table: str, region: str) -> Dict[str, Any]:
    """DescribeTable, DescribeTimeToLive, ListTagsOfResource (every page) and DescribeContinuousBackups."""
    ddb = _control(region)

    def all_tags(arn: str) -> List[Dict[str, str]]:
        tags: List[Dict[str, str]] = []
        kwargs = {"ResourceArn": arn}
        while True:
            page = ddb.list_tags_of_resource(**kwargs)
            tags.extend(page.get("Tags", []))
            if not page.get("NextToken"):
                return tags
            kwargs["NextToken"] = page["NextToken"]

    try:
        description = ddb.describe_table(TableName=table)["Table"]
        ttl = _optional(table, region, "DescribeTimeToLive", lambda: ddb.describe_time_to_live(
            TableName=table).get("TimeToLiveDescription", {}))
        tags = _optional(table, region, "ListTagsOfResource", lambda: all_tags(description["TableArn"]))
        backups = _optional(table, region, "DescribeContinuousBackups", lambda: ddb.describe_continuous_backups(
            TableName=table).get("ContinuousBackupsDescription", {}))
    except (ClientError, BotoCoreError) as exc:
        raise table_error(table, region, exc) from exc
    return _plain({
        "captured_at": datetime.now(timezone.utc).isoformat(),
        "region": region,
        "table_name": table,
        "table": description,
        "time_to_live": ttl,
        "tags": tags,
        "continuous_backups": backups,
    })


def key_names(meta: Dict[str, Any]) -> Tuple[str, Optional[str]]:
    """(hash key name, range key name or None) of the captured table."""
    schema = meta["table"]["KeySchema"]
    hash_key = next(k["AttributeName"] for k in schema if k["KeyType"] == "HASH")
    range_key = next((k["AttributeName"] for k in schema if k["KeyType"] == "RANGE"), None)
    return hash_key, range_key


def billing_mode(description: Dict[str, Any]) -> str:
    return (description.get("BillingModeSummary") or {}).get("BillingMode", "PROVISIONED")


def stream_view(description: Dict[str, Any]) -> Optional[str]:
    spec = description.get("StreamSpecification") or {}
    return spec.get("StreamViewType") if spec.get("StreamEnabled") else None


def _throughput(source: Dict[str, Any]) -> Dict[str, int]:
    return {"ReadCapacityUnits": int(source["ReadCapacityUnits"]),
            "WriteCapacityUnits": int(source["WriteCapacityUnits"])}


def _on_demand(source: Optional[Dict[str, Any]]) -> Optional[Dict[str, int]]:
    limits = {k: int(v) for k, v in (source or {}).items()
              if k in ("MaxReadRequestUnits", "MaxWriteRequestUnits") and int(v) > 0}
    return limits or None


def _warm(source: Optional[Dict[str, Any]]) -> Optional[Dict[str, int]]:
    warm = {k: int(v) for k, v in (source or {}).items()
            if k in ("ReadUnitsPerSecond", "WriteUnitsPerSecond") and int(v) > 0}
    return warm or None


def create_request(meta: Dict[str, Any], table_name: str, *, mode: Optional[str] = None,
                   kms_key: Optional[str] = None) -> Tuple[Dict[str, Any], List[str]]:
    """CreateTable parameters rebuilding the captured table as ``table_name``, and notes for the operator.

    Pure: no AWS calls. TTL and point-in-time recovery are not CreateTable settings; see :func:`finish`.
    """
    src = meta["table"]
    notes: List[str] = []
    mode = mode or billing_mode(src)
    provisioned = mode == "PROVISIONED"
    request: Dict[str, Any] = {
        "TableName": table_name,
        "AttributeDefinitions": src["AttributeDefinitions"],
        "KeySchema": src["KeySchema"],
        "BillingMode": mode,
    }
    if provisioned:
        if "ReadCapacityUnits" not in (src.get("ProvisionedThroughput") or {}) or \
                int(src["ProvisionedThroughput"]["ReadCapacityUnits"]) == 0:
            raise UsageError(f"table {meta['table_name']} was on-demand; --billing-mode PROVISIONED needs "
                             f"capacity ddbvault cannot guess: restore on-demand and switch after the load")
        request["ProvisionedThroughput"] = _throughput(src["ProvisionedThroughput"])
    elif _on_demand(src.get("OnDemandThroughput")):
        request["OnDemandThroughput"] = _on_demand(src.get("OnDemandThroughput"))
    warm = _warm(src.get("WarmThroughput"))
    if warm:
        request["WarmThroughput"] = warm
    lsis = [{"IndexName": i["IndexName"], "KeySchema": i["KeySchema"], "Projection": i["Projection"]}
            for i in src.get("LocalSecondaryIndexes", [])]
    if lsis:
        request["LocalSecondaryIndexes"] = lsis
    gsis = []
    for index in src.get("GlobalSecondaryIndexes", []):
        gsi: Dict[str, Any] = {"IndexName": index["IndexName"], "KeySchema": index["KeySchema"],
                               "Projection": index["Projection"]}
        if provisioned:
            gsi["ProvisionedThroughput"] = _throughput(index.get("ProvisionedThroughput") or
                                                       src["ProvisionedThroughput"])
        elif _on_demand(index.get("OnDemandThroughput")):
            gsi["OnDemandThroughput"] = _on_demand(index.get("OnDemandThroughput"))
        if _warm(index.get("WarmThroughput")):
            gsi["WarmThroughput"] = _warm(index.get("WarmThroughput"))
        gsis.append(gsi)
    if gsis:
        request["GlobalSecondaryIndexes"] = gsis
    view = stream_view(src)
    if view:
        request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": view}
    sse = src.get("SSEDescription") or {}
    if kms_key:
        request["SSESpecification"] = {"Enabled": True, "SSEType": "KMS", "KMSMasterKeyId": kms_key}
        notes.append(f"encryption: KMS key {kms_key}")
    elif sse.get("SSEType") == "KMS":
        source_key = sse.get("KMSMasterKeyArn", "?")
        notes.append(f"encryption: the source used KMS key {source_key}, which belongs to its region; the replica "
                     f"uses the AWS-owned key (pass --kms-key for a key of the recovery region)")
    table_class = (src.get("TableClassSummary") or {}).get("TableClass")
    if table_class:
        request["TableClass"] = table_class
    if src.get("DeletionProtectionEnabled"):
        request["DeletionProtectionEnabled"] = True
    if meta.get("tags"):
        request["Tags"] = meta["tags"]
    for part, label in (("time_to_live", "TTL"), ("tags", "tags"), ("continuous_backups", "point-in-time recovery")):
        if meta.get(part) is None:
            notes.append(f"{label}: not captured by the export (its endpoint lacked the call); set it by hand")
    return request, notes


def wait_active(table: str, region: str, timeout_s: float = 1800.0) -> Dict[str, Any]:
    """Poll DescribeTable until the table and all its GSIs are ACTIVE."""
    ddb = _control(region)
    deadline = time.time() + timeout_s
    delay = 0.2
    while True:
        try:
            description = ddb.describe_table(TableName=table)["Table"]
        except ClientError as exc:
            if exc.response["Error"].get("Code") != "ResourceNotFoundException":
                raise table_error(table, region, exc) from exc
            description = {"TableStatus": "CREATING"}
        statuses = [description.get("TableStatus")] + [g.get("IndexStatus") for g in
                                                       description.get("GlobalSecondaryIndexes", [])]
        if all(s == "ACTIVE" for s in statuses):
            return description
        if time.time() > deadline:
            raise TableError(f"table {table} in region {region} is still {statuses} after {timeout_s:.0f}s; "
                             f"check it in the console and rerun")
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def describe(table: str, region: str) -> Optional[Dict[str, Any]]:
    """DescribeTable's Table, or None when there is no such table."""
    try:
        return _control(region).describe_table(TableName=table)["Table"]
    except ClientError as exc:
        if exc.response["Error"].get("Code") == "ResourceNotFoundException":
            return None
        raise table_error(table, region, exc) from exc
    except BotoCoreError as exc:
        raise table_error(table, region, exc) from exc


def create(request: Dict[str, Any], region: str) -> Dict[str, Any]:
    """CreateTable, then wait for ACTIVE."""
    table = request["TableName"]
    try:
        _control(region).create_table(**request)
    except (ClientError, BotoCoreError) as exc:
        raise table_error(table, region, exc) from exc
    return wait_active(table, region)


def enable_point_in_time_recovery(meta: Dict[str, Any], table: str, region: str) -> bool:
    """Turn PITR on for the replica when the source had it; True when it did."""
    pitr = (meta.get("continuous_backups") or {}).get("PointInTimeRecoveryDescription") or {}
    if pitr.get("PointInTimeRecoveryStatus") != "ENABLED":
        return False
    try:
        _control(region).update_continuous_backups(
            TableName=table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
    except (ClientError, BotoCoreError) as exc:
        raise table_error(table, region, exc) from exc
    return True


def enable_ttl(meta: Dict[str, Any], table: str, region: str) -> Optional[str]:
    """Turn TTL on with the source's attribute (only after the load); the attribute name, or None."""
    ttl = meta.get("time_to_live") or {}
    if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING") or not ttl.get("AttributeName"):
        return None
    ddb = _control(region)
    try:
        # UpdateTimeToLive is not idempotent: on a table whose TTL is already on (a rerun, --existing-table)
        # DynamoDB answers ValidationException "TimeToLive is already enabled".
        current = ddb.describe_time_to_live(TableName=table).get("TimeToLiveDescription", {})
        if current.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
            if current.get("AttributeName") != ttl["AttributeName"]:
                raise TableError(f"table {table} in region {region} has TTL on attribute "
                                 f"{current.get('AttributeName')}, the source on {ttl['AttributeName']}: items "
                                 f"are loaded; disable TTL on the replica and enable it on "
                                 f"{ttl['AttributeName']}")
            return ttl["AttributeName"]
        ddb.update_time_to_live(
            TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]})
    except (ClientError, BotoCoreError) as exc:
        raise table_error(table, region, exc) from exc
    return ttl["AttributeName"]


def ttl_attribute(table: str, region: str) -> Optional[str]:
    """The attribute TTL is on for (status ENABLED), or None: off, being switched, or unknown to this endpoint."""
    ddb = _control(region)
    try:
        found = _optional(table, region, "DescribeTimeToLive",
                          lambda: ddb.describe_time_to_live(TableName=table).get("TimeToLiveDescription", {}))
    except (ClientError, BotoCoreError) as exc:
        raise table_error(table, region, exc) from exc
    found = found or {}
    return found.get("AttributeName") if found.get("TimeToLiveStatus") == "ENABLED" else None


def key_schema_matches(meta: Dict[str, Any], existing: Dict[str, Any]) -> bool:
    """True when an existing table has the captured table's key names, roles and types."""
    def shape(description: Dict[str, Any]) -> List[Tuple[str, str, str]]:
        types = {a["AttributeName"]: a["AttributeType"] for a in description["AttributeDefinitions"]}
        return sorted((k["AttributeName"], k["KeyType"], types.get(k["AttributeName"], "?"))
                      for k in description["KeySchema"])
    return shape(meta["table"]) == shape(existing)


def _indexes(description: Dict[str, Any], kind: str) -> Dict[str, Any]:
    return {i["IndexName"]: {"KeySchema": i.get("KeySchema"), "Projection": i.get("Projection")}
            for i in description.get(kind, []) or []}


def settings_differences(vault_meta: Dict[str, Any], table_meta: Dict[str, Any]) -> List[str]:
    """What differs between the vault's capture and a table's (both from :func:`capture`): key schema, indexes,
    billing mode, stream, TTL and tags; one readable line each, empty when they agree."""
    want, have = vault_meta["table"], table_meta["table"]
    out: List[str] = []
    if want.get("KeySchema") != have.get("KeySchema"):
        out.append(f"key schema: vault {want.get('KeySchema')}, table {have.get('KeySchema')}")
    for kind, label in (("GlobalSecondaryIndexes", "GSI"), ("LocalSecondaryIndexes", "LSI")):
        a, b = _indexes(want, kind), _indexes(have, kind)
        out.extend(f"{label} {n}: in the vault's table, not in this one" for n in sorted(set(a) - set(b)))
        out.extend(f"{label} {n}: in this table, not in the vault's" for n in sorted(set(b) - set(a)))
        out.extend(f"{label} {n}: keys or projection differ" for n in sorted(set(a) & set(b)) if a[n] != b[n])
    if billing_mode(want) != billing_mode(have):
        out.append(f"billing mode: vault {billing_mode(want)}, table {billing_mode(have)}")
    if stream_view(want) != stream_view(have):
        out.append(f"stream: vault {stream_view(want) or 'off'}, table {stream_view(have) or 'off'}")
    ttl_want = (vault_meta.get("time_to_live") or {})
    ttl_have = (table_meta.get("time_to_live") or {})

    def ttl(found: Dict[str, Any]) -> Optional[str]:
        return found.get("AttributeName") if found.get("TimeToLiveStatus") in ("ENABLED", "ENABLING") else None

    if vault_meta.get("time_to_live") is not None and table_meta.get("time_to_live") is not None \
            and ttl(ttl_want) != ttl(ttl_have):
        out.append(f"TTL: vault {ttl(ttl_want) or 'off'}, table {ttl(ttl_have) or 'off'}")
    if vault_meta.get("tags") is not None and table_meta.get("tags") is not None:
        tags_want = {t["Key"]: t["Value"] for t in vault_meta["tags"]}
        tags_have = {t["Key"]: t["Value"] for t in table_meta["tags"]}
        if tags_want != tags_have:
            out.append(f"tags: vault {dict(sorted(tags_want.items()))}, table {dict(sorted(tags_have.items()))}")
    return out


def index_differences(differences: List[str]) -> List[str]:
    return [d for d in differences if d.startswith(("GSI ", "LSI "))]
