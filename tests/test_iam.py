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
# What each role's Platform statements must grant, and nothing more.
PLATFORM = {"s3:GetObject", "s3:ListBucket", "s3:PutObject", "kms:Decrypt", "kms:GenerateDataKey"}
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
        resource = body.get("TableName") or body.get("StreamArn") or body.get("ResourceArn") or ""
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


def run_recorded(url: str, job: str, argv: List[str]) -> Dict[str, Set[str]]:
    with Recording(url) as recording:
        code = load_job(job).main(argv)
    assert code == 0, f"{job} failed: see the captured stderr"
    return called(recording.entries)


def hadoop_settings(spark, bucket: str) -> None:
    """The clusters' s3a settings (emr/configurations.json's spark.hadoop.fs.s3a.*) for ``bucket``: set per bucket
    on a bucket no other test uses, so the s3a filesystem first opened for it in this test takes them."""
    with open(os.path.join(ROOT, "emr", "configurations.json"), encoding="utf-8") as handle:
        spark_defaults = next(c["Properties"] for c in json.load(handle) if c["Classification"] == "spark-defaults")
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in spark_defaults.items():
        if key.startswith("spark.hadoop.fs.s3a."):
            conf.set(f"fs.s3a.bucket.{bucket}.{key[len('spark.hadoop.fs.s3a.'):]}", value)


@pytest.fixture(scope="module")
def runs(spark, aws_endpoint):
    """Export, merge, restore and verify one small table, each recorded on its own: {job: {action: resources}}."""
    vault_bucket = name("iam-vault")
    boto3.client("s3", region_name=REGION_B).create_bucket(
        Bucket=vault_bucket, CreateBucketConfiguration={"LocationConstraint": REGION_B})
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
    common = ["--vault", vault, "--vault-region", REGION_B, "--metrics"]
    out: Dict[str, Any] = {"table": table, "replica": copy, "bucket": vault_bucket, "prefix": prefix}
    try:
        put_items(source, table, [dict(every_type(i), pk={"S": f"p{i % 2}"}, sk={"N": str(i)}) for i in range(5)])
        out["export_table"] = run_recorded(aws_endpoint, "export_table", [
            "--table", table, "--region", REGION_A, "--segments", "2", "--require-stream", "--run-id", "iam-export",
            *common])
        put_items(source, table, [dict(every_type(9), pk={"S": "p9"}, sk={"N": "9"})])
        source.delete_item(TableName=table, Key={"pk": {"S": "p0"}, "sk": {"N": "0"}})
        time.sleep(1.1)  # a merge reads up to the second it starts in
        out["merge_increments"] = run_recorded(aws_endpoint, "merge_increments", [
            "--table", table, "--region", REGION_A, "--run-id", "iam-merge", *common])
        out["restore_table"] = run_recorded(aws_endpoint, "restore_table", [
            "--table", copy, "--region", REGION_B, "--run-id", "iam-restore", *common])
        out["verify_replica"] = run_recorded(aws_endpoint, "verify_replica", [
            "--table", copy, "--region", REGION_B, "--run-id", "iam-verify", *common])
        # The jobs did their work: the replica is the source, item for item.
        assert table_texts(replica, copy) == table_texts(source, table)
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
    assert granted(JOBS[job], "Platform") == PLATFORM


def test_the_recover_cluster_role_is_exactly_restore_and_verify(runs):
    """EMR on EC2 runs the recover machine's restore and verify on one cluster, whose instance profile is one role:
    exactly the two jobs' calls (EMR Serverless runs each with its own role)."""
    assert granted("RecoverRole", "Job") == set(runs["restore_table"]) | set(runs["verify_replica"])
    assert granted("RecoverRole", "Platform") == PLATFORM


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

