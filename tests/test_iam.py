"""Least privilege, proven: each job runs against the stand-ins with every AWS request recorded at moto (the driver's
boto3 calls, the executors' calls through the fault and capacity proxies, and Spark's s3a requests all end there),
each request is mapped to the IAM action that authorises it, and the job's role in emr/ddbvault.json must grant
exactly those actions: none missing (the job would fail with AccessDenied), none extra (a grant no job uses).

A role's statements whose Sid starts with ``Job`` are what the job's own code calls; ``Platform`` statements are what
EMR does on the job's behalf (read the artifacts, write the logs) and what S3 asks of KMS for an SSE-KMS bucket,
which no stand-in request shows: they are listed here, statement by statement, instead."""
from __future__ import annotations

import base64
import html
import importlib.util
import json
import os
import re
import time
import urllib.parse
import urllib.request
from typing import Any, Dict, List, Set, Tuple

import boto3
import pytest
from jobs_helpers import create_table, every_type, name, put_items, table_texts

from servers import REGION_A, REGION_B

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE = os.path.join(ROOT, "emr", "ddbvault.json")
# Each job's role; RecoverRole (EMR on EC2's recover cluster) is checked against restore and verify together.
JOBS = {"export_table": "ExportRole", "merge_increments": "MergeRole", "restore_table": "RestoreRole",
        "verify_replica": "VerifyRole"}
# What each role's Platform statements must grant, and nothing more: EMR's reads and writes, S3's use of the vault's
# key, and what DynamoDB does with the caller's permissions (Developer Guide, "Requesting a table export": write the
# export; "Requesting a table import": read the source files and write CloudWatch Logs under /aws-dynamodb/).
PLATFORM = {"s3:GetObject", "s3:ListBucket", "s3:PutObject", "kms:Decrypt", "kms:GenerateDataKey"}
EXPORT_WRITES = {"s3:AbortMultipartUpload", "s3:PutObject", "s3:PutObjectAcl"}
IMPORT_LOGS = {"logs:CreateLogGroup", "logs:CreateLogStream", "logs:DescribeLogGroups", "logs:DescribeLogStreams",
               "logs:PutLogEvents", "logs:PutRetentionPolicy"}
ROLE_PLATFORM = {"ExportRole": PLATFORM | EXPORT_WRITES, "MergeRole": PLATFORM | EXPORT_WRITES,
                 "RestoreRole": PLATFORM | IMPORT_LOGS, "VerifyRole": PLATFORM, "RecoverRole": PLATFORM | IMPORT_LOGS}
SIGNING_SERVICES = {"monitoring": "cloudwatch", "dynamodb": "dynamodb", "s3": "s3", "sts": "sts"}
STREAMS_TARGET = "DynamoDBStreams_20120810."
DYNAMODB_TARGET = "DynamoDB_20120810."


# -- recording at moto ---------------------------------------------------------------------------------------------

def recorder(url: str, verb: str) -> bytes:
    method = "GET" if verb == "download-recording" else "POST"
    with urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/recorder/{verb}", method=method)) as reply:
        return reply.read()


class Recording:
    """moto's request recorder around one job. It appends to ``moto_recording`` in moto's working directory (this
    run's), which is emptied before and removed after."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = os.path.join(os.getcwd(), "moto_recording")

    def __enter__(self) -> Recording:
        recorder(self.url, "reset-recording")
        recorder(self.url, "start-recording")
        return self

    def __exit__(self, *exc: Any) -> None:
        recorder(self.url, "stop-recording")
        self.entries = [json.loads(line) for line in recorder(self.url, "download-recording").decode().splitlines()
                        if line.strip()]
        recorder(self.url, "reset-recording")
        if os.path.exists(self.path) and os.path.getsize(self.path) == 0:
            os.remove(self.path)


def header(entry: Dict[str, Any], key: str) -> str:
    return next((v for k, v in entry["headers"].items() if k.lower() == key.lower()), "")


def body_text(entry: Dict[str, Any]) -> str:
    body = entry.get("body") or ""
    return base64.b64decode(body).decode("utf-8", "replace") if entry.get("body_encoded") else body


def s3_action(method: str, key: str, query: Dict[str, List[str]], entry: Dict[str, Any]) -> Set[str]:  # noqa: PLR0911
    """The IAM actions that authorise one S3 REST request (path style: /bucket/key?query)."""
    if not key:  # the bucket itself
        for name, action in (("location", "s3:GetBucketLocation"), ("uploads", "s3:ListBucketMultipartUploads"),
                             ("versioning", "s3:GetBucketVersioning"), ("versions", "s3:ListBucketVersions"),
                             ("delete", "s3:DeleteObject")):
            if name in query:
                return {action}
        return {"s3:CreateBucket"} if method == "PUT" else {"s3:ListBucket"}  # GET lists, HEAD needs ListBucket
    if method in ("GET", "HEAD"):
        if "uploadId" in query:
            return {"s3:ListMultipartUploadParts"}
        return {"s3:GetObjectVersion" if "versionId" in query else "s3:GetObject"}
    if method == "PUT" and header(entry, "x-amz-copy-source"):
        return {"s3:PutObject", "s3:GetObject"}
    if method in ("PUT", "POST"):
        return {"s3:PutObject"}  # PutObject, UploadPart, CreateMultipartUpload, CompleteMultipartUpload
    assert method == "DELETE", method
    if "uploadId" in query:
        return {"s3:AbortMultipartUpload"}
    return {"s3:DeleteObjectVersion" if "versionId" in query else "s3:DeleteObject"}


def actions(entry: Dict[str, Any]) -> Tuple[Set[str], List[str]]:
    """(IAM actions, the resources the request names: tables, bucket/key or namespace) for one recorded request."""
    target = header(entry, "x-amz-target")
    if target.startswith((DYNAMODB_TARGET, STREAMS_TARGET)):
        body = json.loads(body_text(entry) or "{}")
        found = {"dynamodb:" + target.split(".", 1)[1]}
        if found == {"dynamodb:CreateTable"} and body.get("Tags"):
            found.add("dynamodb:TagResource")  # CreateTable with tags needs both
        resource = (body.get("TableName") or (body.get("TableCreationParameters") or {}).get("TableName")
                    or body.get("StreamArn") or body.get("ResourceArn") or body.get("TableArn")
                    or body.get("ExportArn") or body.get("ImportArn") or "")
        return found, [resource] if resource or not body.get("RequestItems") else list(body["RequestItems"])
    scope = header(entry, "authorization").split("Credential=", 1)[-1].split(",", 1)[0].split("/")
    service = SIGNING_SERVICES[scope[3]]
    parsed = urllib.parse.urlsplit(entry["url"])
    if service == "s3":
        bucket, _, key = parsed.path.lstrip("/").partition("/")
        query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
        listed = query.get("prefix", [None])[0]
        if "delete" in query:  # DeleteObjects: the keys are in the body
            names = re.findall(r"<Key>([^<]*)</Key>", body_text(entry))
            resources = [f"{bucket}/{html.unescape(k)}" for k in names]
        elif not key and entry["method"] == "HEAD":  # HeadBucket: the bucket itself, no prefix
            resources = [bucket]
        else:
            resources = [f"{bucket}/{urllib.parse.unquote(key)}" if key else f"{bucket}?prefix={listed}"]
        return s3_action(entry["method"], urllib.parse.unquote(key), query, entry), resources
    form = urllib.parse.parse_qs(body_text(entry))
    return {f"{service}:{form['Action'][0]}"}, [form.get("Namespace", [""])[0]]


def called(entries: List[Dict[str, Any]]) -> Dict[str, Set[str]]:
    """{IAM action: the resources it was called on}."""
    out: Dict[str, Set[str]] = {}
    for entry in entries:
        found, resources = actions(entry)
        for action in found:
            out.setdefault(action, set()).update(resources)
    return out


# -- the roles -----------------------------------------------------------------------------------------------------

def template() -> Dict[str, Any]:
    with open(TEMPLATE, encoding="utf-8") as handle:
        return json.load(handle)


def granted(role: str, sid_prefix: str) -> Set[str]:
    statements = [s for policy in template()["Resources"][role]["Properties"]["Policies"]
                  for s in policy["PolicyDocument"]["Statement"]]
    assert all(s["Effect"] == "Allow" and s["Sid"].startswith(("Job", "Platform")) for s in statements), role
    assert not [a for s in statements for a in s["Action"] if "*" in a], f"{role} grants a wildcard action"
    return {a for s in statements if s["Sid"].startswith(sid_prefix) for a in s["Action"]}


# -- the jobs, run once --------------------------------------------------------------------------------------------

def load_job(job: str):
    spec = importlib.util.spec_from_file_location(f"iam_{job}", os.path.join(ROOT, "jobs", f"{job}.py"))
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def run_recorded(url: str, job: str, argv: List[str], *, fails: bool = False) -> Dict[str, Set[str]]:
    with Recording(url) as recording:
        code = load_job(job).main(argv)
    assert (code != 0) if fails else (code == 0), f"{job} {'succeeded' if fails else 'failed'}: see the stderr"
    return called(recording.entries)


def union(*runs: Dict[str, Set[str]]) -> Dict[str, Set[str]]:
    """One job's calls over its runs (its modes): {action: every resource it was called on}."""
    out: Dict[str, Set[str]] = {}
    for run in runs:
        for action, resources in run.items():
            out.setdefault(action, set()).update(resources)
    return out


def hadoop_settings(spark, bucket: str) -> None:
    """The clusters' s3a settings (emr/configurations.json's spark.hadoop.fs.s3a.*) for ``bucket``: set per bucket
    on a bucket no other test uses, so the s3a filesystem first opened for it in this test takes them."""
    with open(os.path.join(ROOT, "emr", "configurations.json"), encoding="utf-8") as handle:
        spark_defaults = next(c["Properties"] for c in json.load(handle) if c["Classification"] == "spark-defaults")
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in spark_defaults.items():
        if key.startswith("spark.hadoop.fs.s3a."):
            conf.set(f"fs.s3a.bucket.{bucket}.{key[len('spark.hadoop.fs.s3a.'):]}", value)


def land_lambda_change(bucket: str, prefix: str, stream_arn: str, item: Dict[str, Any]) -> None:
    """What the change-source Lambda lands for the INSERT of ``item`` (not recorded: it is the Lambda's call)."""
    from ddbvault.changes import lambda_sink

    keys = {k: item[k] for k in ("pk", "sk")}
    record = {"eventID": f"iam-{time.time_ns()}", "eventName": "INSERT", "eventSourceARN": stream_arn,
              "dynamodb": {"Keys": keys, "NewImage": item, "ApproximateCreationDateTime": int(time.time()),
                           "SequenceNumber": str(time.time_ns()), "SizeBytes": 100,
                           "StreamViewType": "NEW_AND_OLD_IMAGES"}}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(lambda_sink.DESTINATION, f"s3://{bucket}/{prefix}/_ddbvault/incoming")
        assert lambda_sink.handler({"Records": [record]}, s3=boto3.client("s3", region_name=REGION_B)) == {
            "batchItemFailures": []}


def fast_polls(patch: pytest.MonkeyPatch, url: str) -> None:
    """DynamoDB's exports and imports polled every 0.2 s (the stand-in finishes them at once), and a broken file put
    among an import's staged ones (unrecorded: the job never writes it) when ``broken_import`` is set."""
    from ddbvault import merge_files
    from ddbvault.changes import native_export
    from ddbvault.dynamo import importer

    real_wait_export, real_wait_import, real_start = native_export.wait_export, importer.wait, importer.start
    patch.setattr(native_export, "wait_export", lambda arn, region, *, timeout_s, poll_s=10.0:
                  real_wait_export(arn, region, timeout_s=timeout_s, poll_s=0.2))
    patch.setattr(importer, "wait", lambda arn, region, *, timeout_s, poll_s=15.0, **kw:
                  real_wait_import(arn, region, timeout_s=timeout_s, poll_s=0.2, **kw))
    # The stand-in exports at once: a merge may ask for an incremental export of the seconds since the vault's.
    patch.setattr(merge_files, "INCREMENTAL_MIN", merge_files.timedelta(0))

    def start(params: Dict[str, Any], region: str) -> Dict[str, Any]:
        if fast_polls.broken_import:  # type: ignore[attr-defined]
            where = params["S3BucketSource"]
            recorder(url, "stop-recording")
            boto3.client("s3", region_name=REGION_B).put_object(
                Bucket=where["S3Bucket"], Key=where["S3KeyPrefix"] + "zz-broken.json.gz", Body=b"not gzip")
            recorder(url, "start-recording")
        return real_start(params, region)

    fast_polls.broken_import = False  # type: ignore[attr-defined]
    patch.setattr(importer, "start", start)


@pytest.fixture(scope="module")
def runs(spark, aws_endpoint):
    """Export, merge, restore and verify one small table in every mode, each run recorded on its own and each job's
    runs united: {job: {action: resources}}. The order lets every mode run on one vault: a merge from another
    source than the last one's follows a new export.

    export_table: a scan; --start-export into the vault's _ddbvault/exports (where the stack lets DynamoDB write);
    --from-export of that export. merge_increments: the stream; --format incremental-export --start-export from
    _ddbvault/exports; --format lambda from _ddbvault/incoming (the change-source Lambda's destination).
    restore_table: batch-write; --method import; --method import whose import fails (its table is deleted)."""
    vault_bucket = name("iam-vault")
    s3 = boto3.client("s3", region_name=REGION_B)
    s3.create_bucket(Bucket=vault_bucket, CreateBucketConfiguration={"LocationConstraint": REGION_B})
    hadoop_settings(spark, vault_bucket)
    source = boto3.client("dynamodb", region_name=REGION_A)
    replica = boto3.client("dynamodb", region_name=REGION_B)
    table, copy = name("iam"), name("iam-replica")
    # Every setting a restore rebuilds, so each call that rebuilds one is recorded: tags, TTL, PITR.
    create_table(source, table, [("pk", "S"), ("sk", "N")], stream="NEW_AND_OLD_IMAGES", tags={"team": "dr"})
    source.update_time_to_live(TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})
    source.update_continuous_backups(TableName=table,
                                     PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
    prefix = f"iam/{table}"
    vault = f"s3://{vault_bucket}/{prefix}"
    exports = f"{vault}/_ddbvault/exports"
    common = ["--vault", vault, "--vault-region", REGION_B, "--metrics"]
    export_args = ["--table", table, "--region", REGION_A, *common]
    restore_args = ["--table", copy, "--region", REGION_B, *common]
    out: Dict[str, Any] = {"table": table, "replica": copy, "bucket": vault_bucket, "prefix": prefix, "modes": {}}
    modes = out["modes"]
    try:
        with pytest.MonkeyPatch.context() as patch:
            fast_polls(patch, aws_endpoint)
            put_items(source, table, [dict(every_type(i), pk={"S": f"p{i % 2}"}, sk={"N": str(i)}) for i in range(5)])
            modes["export scan"] = run_recorded(aws_endpoint, "export_table", [
                *export_args, "--segments", "2", "--require-stream", "--run-id", "iam-export"])
            put_items(source, table, [dict(every_type(9), pk={"S": "p9"}, sk={"N": "9"})])
            source.delete_item(TableName=table, Key={"pk": {"S": "p0"}, "sk": {"N": "0"}})
            time.sleep(1.1)  # a merge reads up to the second it starts in
            modes["merge stream"] = run_recorded(aws_endpoint, "merge_increments", [
                "--table", table, "--region", REGION_A, "--run-id", "iam-merge", *common])
            modes["restore batch-write"] = run_recorded(aws_endpoint, "restore_table", [
                *restore_args, "--method", "batch-write", "--run-id", "iam-restore"])
            modes["verify"] = run_recorded(aws_endpoint, "verify_replica", [
                "--table", copy, "--region", REGION_B, "--run-id", "iam-verify", *common])
            # The jobs did their work: the replica is the source, item for item.
            assert table_texts(replica, copy) == table_texts(source, table)
            replica.delete_table(TableName=copy)

            modes["restore import"] = run_recorded(aws_endpoint, "restore_table", [
                *restore_args, "--method", "import", "--run-id", "iam-import"])
            assert table_texts(replica, copy) == table_texts(source, table)
            replica.delete_table(TableName=copy)
            fast_polls.broken_import = True  # type: ignore[attr-defined]
            modes["restore import, failed"] = run_recorded(aws_endpoint, "restore_table", [
                *restore_args, "--method", "import", "--run-id", "iam-import-failed"], fails=True)
            fast_polls.broken_import = False  # type: ignore[attr-defined]
            assert copy not in replica.list_tables()["TableNames"]  # the failed import's table was deleted

            # A change the Lambda lands before the next export: a first merge of landed files needs one.
            landed_item = {"pk": {"S": "p7"}, "sk": {"N": "7"}, "note": {"S": "landed"}}  # JSON as the Lambda gets it
            put_items(source, table, [landed_item])
            stream_arn = source.describe_table(TableName=table)["Table"]["LatestStreamArn"]
            land_lambda_change(vault_bucket, prefix, stream_arn, landed_item)
            time.sleep(1.1)
            modes["export --start-export"] = run_recorded(aws_endpoint, "export_table", [
                *export_args, "--start-export", "--export-bucket", vault_bucket,
                "--export-prefix", f"{prefix}/_ddbvault/exports", "--run-id", "iam-export-native"])
            time.sleep(1.1)
            modes["merge incremental-export --start-export"] = run_recorded(aws_endpoint, "merge_increments", [
                "--table", table, "--region", REGION_A, "--source", exports, "--format", "incremental-export",
                "--start-export", "--run-id", "iam-merge-incremental", *common])
            listed = s3.list_objects_v2(Bucket=vault_bucket, Prefix=f"{prefix}/_ddbvault/exports/")
            manifests = [o["Key"] for o in listed.get("Contents", []) if o["Key"].endswith("/manifest-summary.json")]
            assert len(manifests) == 2, manifests  # the full export and the one the merge asked for
            first = sorted(manifests)[0].rsplit("/", 1)[0]
            modes["export --from-export"] = run_recorded(aws_endpoint, "export_table", [
                *export_args, "--from-export", f"s3://{vault_bucket}/{first}/", "--run-id", "iam-export-from"])
            modes["merge lambda"] = run_recorded(aws_endpoint, "merge_increments", [
                "--table", table, "--region", REGION_A, "--source", f"{vault}/_ddbvault/incoming", "--format", "lambda",
                "--run-id", "iam-merge-lambda", *common])
        for job, started in (("export_table", "export"), ("merge_increments", "merge"), ("restore_table", "restore"),
                             ("verify_replica", "verify")):
            out[job] = union(*(calls for mode, calls in modes.items() if mode.startswith(started)))
        yield out
    finally:
        source.delete_table(TableName=table)
        if copy in replica.list_tables()["TableNames"]:
            replica.delete_table(TableName=copy)


@pytest.mark.parametrize("job", sorted(JOBS))
def test_a_job_calls_only_actions_its_role_grants(runs, job):
    missing = sorted(set(runs[job]) - granted(JOBS[job], "Job"))
    assert missing == [], f"{job} calls {missing}, which {JOBS[job]} in emr/ddbvault.json does not grant"


@pytest.mark.parametrize("job", sorted(JOBS))
def test_a_role_grants_only_actions_its_job_calls(runs, job):
    unused = sorted(granted(JOBS[job], "Job") - set(runs[job]))
    assert unused == [], f"{JOBS[job]} grants {unused}, which {job} never called"
    assert granted(JOBS[job], "Platform") == ROLE_PLATFORM[JOBS[job]]


def test_the_recover_cluster_role_is_exactly_restore_and_verify(runs):
    """EMR on EC2 runs the recover machine's restore and verify on one cluster, whose instance profile is one role:
    exactly the two jobs' calls (EMR Serverless runs each with its own role)."""
    assert granted("RecoverRole", "Job") == set(runs["restore_table"]) | set(runs["verify_replica"])
    assert granted("RecoverRole", "Platform") == ROLE_PLATFORM["RecoverRole"]


@pytest.mark.parametrize("job", sorted(JOBS))
def test_a_job_touches_only_its_table_and_its_vault_prefix(runs, job):
    table = runs["table"] if job in ("export_table", "merge_increments") else runs["replica"]
    bucket, prefix = runs["bucket"], runs["prefix"]
    for action, resources in runs[job].items():
        for resource in resources:
            if action.startswith("dynamodb:"):
                # GetRecords names only its shard iterator, which GetShardIterator gave for the table's stream.
                assert resource == "" if action == "dynamodb:GetRecords" else table in resource, (action, resource)
            elif action.startswith("s3:"):
                # Objects under the prefix; listings of the prefix or below (the role's s3:prefix condition).
                assert resource.startswith((f"{bucket}/{prefix}/", f"{bucket}?prefix={prefix}/")) or \
                    resource == f"{bucket}?prefix={prefix}", (action, resource)
            else:
                assert (action, resource) == ("cloudwatch:PutMetricData", "ddbvault")


def test_every_mode_made_the_calls_that_set_it_apart(runs):
    """Each mode ran, and through its own path: the calls only it makes, on the places the stack gives it."""
    modes, bucket, prefix = runs["modes"], runs["bucket"], runs["prefix"]
    meta = f"{bucket}/{prefix}/_ddbvault"

    def objects(mode: str, action: str, under: str) -> bool:
        return any(r.startswith(f"{meta}/{under}/") for r in modes[mode].get(action, ()))

    for mode in ("export --start-export", "merge incremental-export --start-export"):
        assert {"dynamodb:ExportTableToPointInTime", "dynamodb:DescribeExport"} <= set(modes[mode]), mode
    assert "dynamodb:ExportTableToPointInTime" not in modes["export --from-export"]
    assert objects("export --from-export", "s3:GetObject", "exports/AWSDynamoDB")
    assert objects("export --start-export", "s3:GetObject", "exports/AWSDynamoDB")
    assert objects("merge incremental-export --start-export", "s3:GetObject", "exports/AWSDynamoDB")
    assert objects("merge lambda", "s3:GetObject", "incoming")
    for mode in ("restore import", "restore import, failed"):
        assert {"dynamodb:ImportTable", "dynamodb:DescribeImport"} <= set(modes[mode]), mode
        assert objects(mode, "s3:PutObject", "import-staging") and objects(mode, "s3:DeleteObject", "import-staging")
    assert bucket not in modes["restore import"].get("s3:ListBucket", ())  # no listing beyond the vault's prefix
    assert "dynamodb:DeleteTable" in modes["restore import, failed"]
    assert "dynamodb:DeleteTable" not in modes["restore import"]
    assert "dynamodb:ImportTable" not in modes["restore batch-write"]


def test_the_platform_statements_name_the_places_dynamodb_reads_and_writes():
    """DynamoDB writes exports under <vault>/_ddbvault/exports and reads imports from <vault>/_ddbvault/import-staging
    with the job's permissions; its import logs go to /aws-dynamodb/ log groups."""
    def statement(role: str, sid: str) -> Dict[str, Any]:
        (found,) = [s for s in template()["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]
                    ["Statement"] if s["Sid"] == sid]
        return found

    vault = "arn:${AWS::Partition}:s3:::${VaultBucket}/${VaultPrefix}/_ddbvault"
    # No role may list the vault bucket beyond the vault's prefix (restore checks its staging with a listing).
    for role in ("ExportRole", "MergeRole", "VerifyRole", "RestoreRole", "RecoverRole"):
        assert not [s for s in template()["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]
                    ["Statement"] if s["Sid"] == "JobVaultBucket"], role
    for role in ("ExportRole", "MergeRole"):
        writes = statement(role, "PlatformExportWrites")
        assert (set(writes["Action"]), writes["Resource"]) == (EXPORT_WRITES, [{"Fn::Sub": f"{vault}/exports/*"}])
    for role in ("RestoreRole", "RecoverRole"):
        reads = statement(role, "PlatformImportSource")
        assert (reads["Action"], reads["Resource"]) == (["s3:GetObject"], [{"Fn::Sub": f"{vault}/import-staging/*"}])
        logs = statement(role, "PlatformImportLogs")
        assert (set(logs["Action"]), logs["Resource"]) == (IMPORT_LOGS, [{"Fn::Sub": (
            "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:/aws-dynamodb/*")}])


def test_the_change_sink_lambda_calls_only_what_its_role_grants(aws_endpoint, monkeypatch):
    """The change-source Lambda's handler writes the batch under its destination and calls nothing else; its role's
    stream actions are the event source mapping's (Platform), not the handler's."""
    from ddbvault.changes import lambda_sink

    bucket = name("iam-sink")
    boto3.client("s3", region_name=REGION_B).create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION_B})
    monkeypatch.setenv("DDBVAULT_DESTINATION", f"s3://{bucket}/orders/_ddbvault/incoming")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION_B)
    monkeypatch.setenv("AWS_REGION", REGION_B)
    arn = f"arn:aws:dynamodb:{REGION_A}:123456789012:table/orders/stream/2026-11-27T00:00:00.000"
    records = [{"eventID": str(i), "eventName": "INSERT", "eventSourceARN": arn,
                "dynamodb": {"Keys": {"pk": {"S": f"p{i}"}}, "NewImage": {"pk": {"S": f"p{i}"}},
                             "SequenceNumber": str(100 + i), "SizeBytes": 10, "StreamViewType": "NEW_AND_OLD_IMAGES"}}
               for i in range(3)]
    with Recording(aws_endpoint) as recording:
        assert lambda_sink.handler({"Records": records}) == {"batchItemFailures": []}
    calls = called(recording.entries)
    assert {a: {r.rsplit("/", 1)[0] for r in found} for a, found in calls.items()} == {
        "s3:PutObject": {f"{bucket}/orders/_ddbvault/incoming/orders/2026-11-27T00-00-00.000"}}
    assert granted("ChangeSinkRole", "Job") == set(calls)
    assert granted("ChangeSinkRole", "Platform") == {
        "dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams",
        "kms:GenerateDataKey", "logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"}
    statements = template()["Resources"]["ChangeSinkRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    (destination,) = [st for st in statements if st["Sid"] == "JobDestination"]
    assert destination["Resource"] == [{"Fn::Sub": "arn:${AWS::Partition}:s3:::${VaultBucket}/${VaultPrefix}"
                                                   "/_ddbvault/incoming/*"}]

