"""Writes emr/ddbvault.json, the CloudFormation stack for one protected table, in the recovery region (stdlib only).

    python3 emr/build_stack.py          # rewrite the template
    python3 emr/build_stack.py --check  # exit 1 if the committed template differs from what this writes

The state machines and the Spark settings come from emr/build_stepfunctions.py (one description for both). The
stack holds: the vault bucket (SSE-KMS with a bucket key, public access blocked, TLS only, versioned, old versions
and incomplete uploads expired, Object Lock as an option), an artifacts bucket (the package under `artifacts/`, logs
under `logs/`), one IAM role per job (export, merge, restore, verify; each with only the actions that job calls, which
tests/test_iam.py proves against recorded calls), the change-source Lambda's role, the EMR service role, the Step
Functions role (iam:PassRole on exactly the roles above), an EMR Serverless application, the eight state machines,
EventBridge Scheduler schedules (a full export, and merges every N minutes), and an SNS topic with alarms on a failed
run, a verify mismatch and the vault's staleness (the merge's VaultLagSeconds: the recovery point objective).
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import build_stepfunctions as sfn  # noqa: E402

OUT = "ddbvault.json"
ACCOUNT = "${AWS::AccountId}"
PARTITION = "${AWS::Partition}"
VAULT_URI = "s3://${VaultBucket}/${VaultPrefix}"
# Where the change-source Lambda lands stream batches (DDBVAULT_DESTINATION; merge_increments --source).
CHANGE_SINK_DESTINATION = VAULT_URI + "/_ddbvault/incoming"

# Where DynamoDB writes the exports export_table --start-export and merge_increments --start-export ask for
# (--export-bucket VaultBucket --export-prefix VaultPrefix/_ddbvault/exports; merge --source this URI), and where
# restore_table --method import stages its files (its default, <vault>/_ddbvault/import-staging).
EXPORTS_URI = VAULT_URI + "/_ddbvault/exports"
IMPORT_STAGING_URI = VAULT_URI + "/_ddbvault/import-staging"

# What each job's own code calls (tests/test_iam.py records the calls and fails on any difference). Resources: the
# source table, its stream and its exports for export and merge, the replica and its imports for restore and verify;
# the vault's prefix only. "platform" names what DynamoDB does with the job's permissions (below, job_role).
SOURCE_TABLE = f"arn:{PARTITION}:dynamodb:${{SourceRegion}}:{ACCOUNT}:table/${{TableName}}"
REPLICA_TABLE = f"arn:{PARTITION}:dynamodb:${{AWS::Region}}:{ACCOUNT}:table/${{ReplicaName}}"
JOB_ACTIONS: Dict[str, Dict[str, Any]] = {
    "Export": {  # a scan, or DynamoDB's full export (--start-export) or one given (--from-export)
        "dynamodb": (["dynamodb:DescribeContinuousBackups", "dynamodb:DescribeExport", "dynamodb:DescribeTable",
                      "dynamodb:DescribeTimeToLive", "dynamodb:ExportTableToPointInTime",
                      "dynamodb:ListTagsOfResource", "dynamodb:Scan"], [SOURCE_TABLE, SOURCE_TABLE + "/export/*"]),
        "objects": ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"],
        "platform": ["exports"],
    },
    "Merge": {  # the stream, or landed files (--source), or DynamoDB's incremental exports (--start-export)
        "dynamodb": (["dynamodb:DescribeExport", "dynamodb:DescribeStream", "dynamodb:DescribeTable",
                      "dynamodb:ExportTableToPointInTime", "dynamodb:GetRecords", "dynamodb:GetShardIterator"],
                     [SOURCE_TABLE, SOURCE_TABLE + "/stream/*", SOURCE_TABLE + "/export/*"]),
        "objects": ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"],
        "platform": ["exports"],
    },
    "Restore": {  # BatchWriteItem, or ImportTable (--method import; DeleteTable removes a failed import's table)
        "dynamodb": (["dynamodb:BatchWriteItem", "dynamodb:CreateTable", "dynamodb:DeleteTable",
                      "dynamodb:DescribeImport", "dynamodb:DescribeTable", "dynamodb:DescribeTimeToLive",
                      "dynamodb:ImportTable", "dynamodb:TagResource", "dynamodb:UpdateContinuousBackups",
                      "dynamodb:UpdateTable", "dynamodb:UpdateTimeToLive"],
                     [REPLICA_TABLE, REPLICA_TABLE + "/import/*"]),
        "objects": ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"],
        "platform": ["imports"],
    },
    "Verify": {
        "dynamodb": (["dynamodb:DescribeContinuousBackups", "dynamodb:DescribeTable", "dynamodb:DescribeTimeToLive",
                      "dynamodb:ListTagsOfResource", "dynamodb:Scan"], [REPLICA_TABLE]),
        "objects": ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"],
        "platform": [],
    },
}
# EMR on EC2's recover machine runs restore and verify on one cluster, so one instance profile: both jobs' calls.
JOB_ACTIONS["Recover"] = {
    "dynamodb": (sorted(set(JOB_ACTIONS["Restore"]["dynamodb"][0]) | set(JOB_ACTIONS["Verify"]["dynamodb"][0])),
                 JOB_ACTIONS["Restore"]["dynamodb"][1]),
    "objects": sorted(set(JOB_ACTIONS["Restore"]["objects"]) | set(JOB_ACTIONS["Verify"]["objects"])),
    "platform": JOB_ACTIONS["Restore"]["platform"],
}
JOBS = {"Export": "export_table", "Merge": "merge_increments", "Restore": "restore_table",
        "Verify": "verify_replica", "Recover": "restore_table and verify_replica (EMR on EC2's recover cluster)"}


REPLICA_NAME = {"Fn::If": ["ReplicaIsTable", {"Ref": "TableName"}, {"Ref": "ReplicaTableName"}]}


def sub(text: str) -> Dict[str, Any]:
    """Fn::Sub; ``${ReplicaName}`` is the replica's name (TableName unless ReplicaTableName is given)."""
    return {"Fn::Sub": [text, {"ReplicaName": REPLICA_NAME}]} if "${ReplicaName}" in text else {"Fn::Sub": text}


def trust(*services: str) -> Dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                    "Principal": {"Service": list(services)}}]}


def policy(name: str, statements: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {"PolicyName": name, "PolicyDocument": {"Version": "2012-10-17", "Statement": statements}}


def allow(sid: str, actions: List[str], resources: List[Any], condition: Any = None) -> Dict[str, Any]:
    out = {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": resources}
    if condition:
        out["Condition"] = condition
    return out


def job_role(name: str) -> Dict[str, Any]:
    """The job's role: Job statements (its own calls) and Platform statements (EMR's and S3's on its behalf)."""
    spec = JOB_ACTIONS[name]
    actions, tables = spec["dynamodb"]
    statements = [
        allow("JobDynamoDB", actions, [sub(t) for t in tables]),
        allow("JobVaultList", ["s3:ListBucket"], [sub("arn:${AWS::Partition}:s3:::${VaultBucket}")],
              {"StringLike": {"s3:prefix": [{"Ref": "VaultPrefix"}, sub("${VaultPrefix}/*")]}}),
        allow("JobVaultObjects", spec["objects"], [sub("arn:${AWS::Partition}:s3:::${VaultBucket}/${VaultPrefix}/*")]),
        allow("JobMetrics", ["cloudwatch:PutMetricData"], ["*"],
              {"StringEquals": {"cloudwatch:namespace": "ddbvault"}}),
    ]
    if "exports" in spec["platform"]:
        # DynamoDB writes the export the job asks for with the job's permissions (Developer Guide, "Requesting a
        # table export"), under <vault>/_ddbvault/exports only.
        statements.append(allow("PlatformExportWrites", ["s3:AbortMultipartUpload", "s3:PutObject", "s3:PutObjectAcl"],
                                [sub(f"arn:${{AWS::Partition}}:s3:::{EXPORTS_URI[len('s3://'):]}/*")]))
    if "imports" in spec["platform"]:
        # DynamoDB reads the staged files and logs the import with the job's permissions (Developer Guide,
        # "Requesting a table import").
        staging = IMPORT_STAGING_URI[len("s3://"):]
        statements += [
            allow("PlatformImportSource", ["s3:GetObject"], [sub(f"arn:${{AWS::Partition}}:s3:::{staging}/*")]),
            allow("PlatformImportList", ["s3:ListBucket"], [sub("arn:${AWS::Partition}:s3:::${VaultBucket}")],
                  {"StringLike": {"s3:prefix": [sub("${VaultPrefix}/_ddbvault/import-staging/*")]}}),
            allow("PlatformImportLogs", ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:DescribeLogGroups",
                                         "logs:DescribeLogStreams", "logs:PutLogEvents", "logs:PutRetentionPolicy"],
                  [sub("arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:/aws-dynamodb/*")]),
        ]
    statements += [
        # S3 asks KMS for the vault's data keys with the caller's permissions (SSE-KMS; the bucket key makes it rare).
        allow("PlatformVaultKey", ["kms:Decrypt", "kms:GenerateDataKey"], [{"Fn::GetAtt": ["VaultKey", "Arn"]}]),
        # EMR reads the package (bootstrap, jobs, archives) and writes the logs with the job's role.
        allow("PlatformArtifacts", ["s3:GetObject"],
              [sub("arn:${AWS::Partition}:s3:::${ArtifactsBucket}/artifacts/*")]),
        allow("PlatformLogs", ["s3:PutObject"], [sub("arn:${AWS::Partition}:s3:::${ArtifactsBucket}/logs/*")]),
        allow("PlatformList", ["s3:ListBucket"], [sub("arn:${AWS::Partition}:s3:::${ArtifactsBucket}")]),
    ]
    return {"Type": "AWS::IAM::Role", "Properties": {
        "Description": f"ddbvault {JOBS[name]}: only what that job calls (tests/test_iam.py)",
        "AssumeRolePolicyDocument": trust("ec2.amazonaws.com", "emr-serverless.amazonaws.com"),
        "Policies": [policy("job", statements)]}}


def bucket_policy(bucket: str) -> Dict[str, Any]:
    return {"Type": "AWS::S3::BucketPolicy", "Properties": {"Bucket": {"Ref": bucket}, "PolicyDocument": {
        "Version": "2012-10-17", "Statement": [{
            "Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
            "Resource": [{"Fn::GetAtt": [bucket, "Arn"]}, sub(f"${{{bucket}.Arn}}/*")],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}}}


PUBLIC_BLOCK = {"BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True}


def buckets() -> Dict[str, Any]:
    return {
        "VaultKey": {"Type": "AWS::KMS::Key", "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain",
                     "Properties": {"Description": "ddbvault: the vault bucket's SSE-KMS key",
                                    "EnableKeyRotation": True,
                                    "KeyPolicy": {"Version": "2012-10-17", "Statement": [{
                                        "Sid": "AccountAdministers", "Effect": "Allow",
                                        "Principal": {"AWS": sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root")},
                                        "Action": "kms:*", "Resource": "*"}]}}},
        "VaultBucket": {"Type": "AWS::S3::Bucket", "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain",
                        "Properties": {
                            "BucketEncryption": {"ServerSideEncryptionConfiguration": [{
                                "BucketKeyEnabled": True, "ServerSideEncryptionByDefault": {
                                    "SSEAlgorithm": "aws:kms",
                                    "KMSMasterKeyID": {"Fn::GetAtt": ["VaultKey", "Arn"]}}}]},
                            "PublicAccessBlockConfiguration": PUBLIC_BLOCK,
                            "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                            "VersioningConfiguration": {"Status": "Enabled"},
                            "ObjectLockEnabled": {"Fn::If": ["ObjectLockOn", True, {"Ref": "AWS::NoValue"}]},
                            "ObjectLockConfiguration": {"Fn::If": ["ObjectLockOn", {
                                "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {
                                    "Mode": "GOVERNANCE", "Days": {"Ref": "ObjectLockDays"}}}},
                                {"Ref": "AWS::NoValue"}]},
                            "LifecycleConfiguration": {"Rules": [
                                {"Id": "old-versions", "Status": "Enabled",
                                 "NoncurrentVersionExpiration": {"NoncurrentDays": {"Ref": "NoncurrentVersionDays"}},
                                 "ExpiredObjectDeleteMarker": True},
                                {"Id": "incomplete-uploads", "Status": "Enabled",
                                 "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}}]}}},
        "VaultBucketPolicy": bucket_policy("VaultBucket"),
        "ArtifactsBucket": {"Type": "AWS::S3::Bucket", "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain",
                            "Properties": {
                                "BucketEncryption": {"ServerSideEncryptionConfiguration": [{
                                    "ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
                                "PublicAccessBlockConfiguration": PUBLIC_BLOCK,
                                "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                                "LifecycleConfiguration": {"Rules": [
                                    {"Id": "logs", "Status": "Enabled", "Prefix": "logs/",
                                     "ExpirationInDays": {"Ref": "LogRetentionDays"}},
                                    {"Id": "incomplete-uploads", "Status": "Enabled",
                                     "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}}]}}},
        "ArtifactsBucketPolicy": bucket_policy("ArtifactsBucket"),
    }


def roles() -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for name in JOBS:
        out[f"{name}Role"] = job_role(name)
        out[f"{name}InstanceProfile"] = {"Type": "AWS::IAM::InstanceProfile",
                                         "Properties": {"Roles": [{"Ref": f"{name}Role"}]}}
    out["ChangeSinkRole"] = {"Type": "AWS::IAM::Role", "Properties": {
        "Description": "ddbvault change-source Lambda (ddbvault.changes.lambda_sink.handler), deployed in the "
                       "source region with this role: the table's stream in, the vault's changes prefix out",
        "AssumeRolePolicyDocument": trust("lambda.amazonaws.com"),
        "Policies": [policy("sink", [
            # The event source mapping reads the stream with the function's role; the handler only writes.
            allow("PlatformStream", ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator",
                                "dynamodb:ListStreams"], [sub(SOURCE_TABLE + "/stream/*")]),
            allow("JobDestination", ["s3:PutObject"],
                  [sub(f"arn:${{AWS::Partition}}:s3:::{CHANGE_SINK_DESTINATION[len('s3://'):]}/*")]),
            allow("PlatformVaultKey", ["kms:GenerateDataKey"], [{"Fn::GetAtt": ["VaultKey", "Arn"]}]),
            allow("PlatformLogs", ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                  [sub("arn:${AWS::Partition}:logs:${SourceRegion}:${AWS::AccountId}:log-group:/aws/lambda/*")]),
        ])]}}
    out["EmrServiceRole"] = {"Type": "AWS::IAM::Role", "Properties": {
        "Description": "ddbvault: the EMR service role of the transient clusters (EMR on EC2)",
        "AssumeRolePolicyDocument": trust("elasticmapreduce.amazonaws.com"),
        "ManagedPolicyArns": [sub("arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonEMRServicePolicy_v2")]}}
    machines = [{"Ref": m} for m in machine_ids()]
    out["StatesRole"] = {"Type": "AWS::IAM::Role", "Properties": {
        "Description": "ddbvault state machines: run the jobs (EMR on EC2 or Serverless) and read their run records",
        "AssumeRolePolicyDocument": trust("states.amazonaws.com"),
        "Policies": [policy("states", [
            allow("Clusters", ["elasticmapreduce:AddJobFlowSteps", "elasticmapreduce:AddTags",
                               "elasticmapreduce:CancelSteps", "elasticmapreduce:DescribeCluster",
                               "elasticmapreduce:DescribeStep", "elasticmapreduce:RunJobFlow",
                               "elasticmapreduce:SetTerminationProtection", "elasticmapreduce:TerminateJobFlows"],
                  ["*"]),
            allow("ServerlessRuns", ["emr-serverless:CancelJobRun", "emr-serverless:GetJobRun",
                                     "emr-serverless:StartJobRun"],
                  [{"Fn::GetAtt": ["ServerlessApplication", "Arn"]},
                   sub("${ServerlessApplication.Arn}/jobruns/*")]),
            # The .sync integrations wait through managed EventBridge rules.
            allow("SyncRules", ["events:DescribeRule", "events:PutRule", "events:PutTargets"], [
                sub("arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:rule/"
                    "StepFunctionsGetEventForEMRRunJobFlowRule"),
                sub("arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:rule/"
                    "StepFunctionsGetEventForEMRAddJobFlowStepsRule"),
                sub("arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:rule/"
                    "StepFunctionsGetEventForEMRTerminateJobFlowsRule"),
                sub("arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:rule/"
                    "StepFunctionsGetEventsForEMRServerlessJobRule")]),
            allow("PassJobRoles", ["iam:PassRole"],
                  [{"Fn::GetAtt": [f"{name}Role", "Arn"]} for name in JOBS]
                  + [{"Fn::GetAtt": ["EmrServiceRole", "Arn"]}]),
            allow("ReadRunRecords", ["s3:GetObject"],
                  [sub("arn:${AWS::Partition}:s3:::${VaultBucket}/${VaultPrefix}/_ddbvault/runs/*")]),
            allow("ReadRunRecordsKey", ["kms:Decrypt"], [{"Fn::GetAtt": ["VaultKey", "Arn"]}]),
        ])]}}
    out["SchedulerRole"] = {"Type": "AWS::IAM::Role", "Properties": {
        "Description": "ddbvault schedules: start the export and merge state machines",
        "AssumeRolePolicyDocument": trust("scheduler.amazonaws.com"),
        "Policies": [policy("start", [allow("StartScheduled", ["states:StartExecution"], machines[:4])])]}}
    return out


def machine_ids() -> List[str]:
    """The scheduled ones first: export and merge, Serverless then EC2."""
    ids = []
    for kind in ("export", "merge", "restore", "recover"):
        ids += [f"{kind.capitalize()}ServerlessMachine", f"{kind.capitalize()}ClusterMachine"]
    return sorted(ids, key=lambda i: (not i.startswith(("Export", "Merge")), i))


def machine_input(kind: str, serverless: bool) -> Dict[str, Any]:
    """What a schedule passes (the README shows the same for a run by hand)."""
    restoring = kind in ("restore", "recover")  # the replica, in this region
    base = {"table": "${ReplicaName}" if restoring else "${TableName}",
            "region": "${AWS::Region}" if restoring else "${SourceRegion}", "vaultBucket": "${VaultBucket}",
            "vaultPrefix": "${VaultPrefix}", "vaultRegion": "${AWS::Region}",
            "artifacts": "s3://${ArtifactsBucket}/artifacts/${ArtifactsVersion}",
            "logUri": "s3://${ArtifactsBucket}/logs/" + kind}
    steps = sfn.MACHINES[kind][3]
    if serverless:
        base["applicationId"] = "${ServerlessApplication}"
        for step in steps:
            base[sfn.role_field(step)] = "${" + step.name + "Role.Arn}"
    else:
        base.update({"subnetId": "${SubnetId}", "release": "${EmrRelease}", "serviceRole": "${EmrServiceRole}",
                     "instanceProfile": "${" + kind.capitalize() + "InstanceProfile}"})
    return base


def state_machines() -> Dict[str, Any]:
    out = {}
    for kind in sfn.MACHINES:
        for serverless in (True, False):
            logical = f"{kind.capitalize()}{'Serverless' if serverless else 'Cluster'}Machine"
            out[logical] = {"Type": "AWS::StepFunctions::StateMachine", "Properties": {
                "StateMachineName": sub(f"ddbvault-${{TableName}}-{kind}{'-serverless' if serverless else ''}"),
                "RoleArn": {"Fn::GetAtt": ["StatesRole", "Arn"]},
                "Definition": sfn.machine(kind, serverless)}}
    return out


def schedules() -> Dict[str, Any]:
    def schedule(kind: str, expression: Any) -> Dict[str, Any]:
        target = {"Fn::If": ["OnServerless", {"Ref": f"{kind}ServerlessMachine"}, {"Ref": f"{kind}ClusterMachine"}]}
        text = {"Fn::If": ["OnServerless", sub(json.dumps(machine_input(kind.lower(), True))),
                           sub(json.dumps(machine_input(kind.lower(), False)))]}
        return {"Type": "AWS::Scheduler::Schedule", "Properties": {
            "Description": sub(f"ddbvault: {kind.lower()} ${{TableName}}"),
            "ScheduleExpression": expression, "FlexibleTimeWindow": {"Mode": "OFF"},
            "Target": {"Arn": target, "RoleArn": {"Fn::GetAtt": ["SchedulerRole", "Arn"]}, "Input": text,
                       "RetryPolicy": {"MaximumRetryAttempts": 0}}}}

    return {"ExportSchedule": schedule("Export", {"Ref": "ExportScheduleExpression"}),
            "MergeSchedule": schedule("Merge", sub("rate(${MergeIntervalMinutes} minutes)"))}


def alarms() -> Dict[str, Any]:
    dims = [{"Name": "Table", "Value": {"Ref": "TableName"}}, {"Name": "Vault", "Value": sub(VAULT_URI)}]

    def alarm(description: str, metric: str, threshold: Any, period: Any, missing: str, **extra: Any):
        props = {"AlarmDescription": description, "Namespace": "ddbvault", "MetricName": metric, "Dimensions": dims,
                 "Statistic": "Maximum", "Period": period, "EvaluationPeriods": 1, "Threshold": threshold,
                 "ComparisonOperator": "GreaterThanOrEqualToThreshold", "TreatMissingData": missing,
                 "AlarmActions": [{"Ref": "AlarmTopic"}], "OKActions": [{"Ref": "AlarmTopic"}]}
        props.update(extra)
        return {"Type": "AWS::CloudWatch::Alarm", "Properties": props}

    out = {
        "AlarmTopic": {"Type": "AWS::SNS::Topic", "Properties": {
            "DisplayName": "ddbvault alarms", "KmsMasterKeyId": "alias/aws/sns"}},
        "AlarmEmailSubscription": {"Type": "AWS::SNS::Subscription", "Condition": "HasAlarmEmail", "Properties": {
            "TopicArn": {"Ref": "AlarmTopic"}, "Protocol": "email", "Endpoint": {"Ref": "AlarmEmail"}}},
        "RunFailedAlarm": alarm(sub("ddbvault: a job on ${TableName} failed (its run record names the cause)"),
                                "RunFailed", 1, 300, "notBreaching"),
        "VerifyMismatchAlarm": alarm(sub("ddbvault: the replica of ${TableName} differs from its vault; repair it "
                                         "with restore_table --existing-table"), "VerifyMismatches", 1, 300,
                                     "notBreaching"),
        # The recovery point objective: the vault more than RpoSeconds behind the table, or no merge published its
        # lag for that long (missing data breaches).
        "StalenessAlarm": alarm(sub("ddbvault: the vault of ${TableName} is older than the RPO (${RpoSeconds} s) "
                                    "or no merge has reported"), "VaultLagSeconds", {"Ref": "RpoSeconds"},
                                {"Ref": "RpoSeconds"}, "breaching"),
    }
    for kind in ("Export", "Merge"):  # a run that never reached its job (cluster, input) publishes no RunFailed
        out[f"{kind}ExecutionsFailedAlarm"] = {"Type": "AWS::CloudWatch::Alarm", "Properties": {
            "AlarmDescription": sub(f"ddbvault: a scheduled {kind.lower()} of ${{TableName}} failed"),
            "Namespace": "AWS/States", "MetricName": "ExecutionsFailed", "Statistic": "Sum", "Period": 300,
            "EvaluationPeriods": 1, "Threshold": 1, "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching", "AlarmActions": [{"Ref": "AlarmTopic"}],
            "Dimensions": [{"Name": "StateMachineArn", "Value": {"Fn::If": [
                "OnServerless", {"Ref": f"{kind}ServerlessMachine"}, {"Ref": f"{kind}ClusterMachine"}]}}]}}
    return out


PARAMETERS = {
    "TableName": {"Type": "String", "AllowedPattern": "[A-Za-z0-9_.-]{3,255}", "Description": "the protected table"},
    "SourceRegion": {"Type": "String", "Description": "the table's region (the stack is in the recovery region)"},
    "ReplicaTableName": {"Type": "String", "Default": "", "AllowedPattern": "([A-Za-z0-9_.-]{3,255})?",
                         "Description": "the table restore creates in this region (default: TableName)"},
    "VaultPrefix": {"Type": "String", "Default": "vault", "AllowedPattern": "[A-Za-z0-9_.=-]+(/[A-Za-z0-9_.=-]+)*",
                    "Description": "the vault's prefix in the vault bucket, no leading or trailing slash"},
    "ArtifactsVersion": {"Type": "String", "Description": "the folder `make package` built (dist/<version>), "
                                                          "uploaded to s3://<artifacts bucket>/artifacts/<version>/"},
    "RunOn": {"Type": "String", "Default": "serverless", "AllowedValues": ["serverless", "ec2"],
              "Description": "which state machines the schedules start"},
    "ExportScheduleExpression": {"Type": "String", "Default": "cron(0 3 ? * SUN *)",
                       "Description": "when a full export runs (EventBridge Scheduler expression)"},
    "MergeIntervalMinutes": {"Type": "Number", "Default": 15, "MinValue": 1, "MaxValue": 1440},
    "RpoSeconds": {"Type": "Number", "Default": 3600, "MinValue": 300, "MaxValue": 86400,
                   "Description": "the staleness alarm's limit, a multiple of 60 (more than the merge interval)"},
    "AlarmEmail": {"Type": "String", "Default": "", "Description": "subscribed to the alarms' topic if given"},
    "ObjectLock": {"Type": "String", "Default": "false", "AllowedValues": ["true", "false"],
                   "Description": "Object Lock (governance mode) on the vault bucket; only at creation"},
    "ObjectLockDays": {"Type": "Number", "Default": 7, "MinValue": 1},
    "NoncurrentVersionDays": {"Type": "Number", "Default": 30, "MinValue": 1,
                              "Description": "how long replaced or deleted vault objects are kept"},
    "LogRetentionDays": {"Type": "Number", "Default": 30, "MinValue": 1},
    "EmrRelease": {"Type": "String", "Default": "emr-7.12.0"},
    "SubnetId": {"Type": "String", "Default": "", "Description": "EMR on EC2 clusters' subnet (RunOn ec2)"},
}


def template() -> Dict[str, Any]:
    resources: Dict[str, Any] = {}
    resources.update(buckets())
    resources.update(roles())
    resources["ServerlessApplication"] = {"Type": "AWS::EMRServerless::Application", "Properties": {
        "Name": sub("ddbvault-${TableName}"), "Type": "SPARK", "ReleaseLabel": {"Ref": "EmrRelease"},
        "AutoStartConfiguration": {"Enabled": True},
        "AutoStopConfiguration": {"Enabled": True, "IdleTimeoutMinutes": 15},
        "MaximumCapacity": {"Cpu": "64 vCPU", "Memory": "256 GB", "Disk": "1000 GB"}}}
    resources.update(state_machines())
    resources.update(schedules())
    resources.update(alarms())
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "ddbvault: disaster recovery for one DynamoDB table, in the recovery region. Generated by "
                       "emr/build_stack.py.",
        "Parameters": PARAMETERS,
        "Conditions": {
            "ObjectLockOn": {"Fn::Equals": [{"Ref": "ObjectLock"}, "true"]},
            "OnServerless": {"Fn::Equals": [{"Ref": "RunOn"}, "serverless"]},
            "HasAlarmEmail": {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]},
            "ReplicaIsTable": {"Fn::Equals": [{"Ref": "ReplicaTableName"}, ""]},
        },
        "Rules": {
            "ClustersNeedASubnet": {
                "RuleCondition": {"Fn::Equals": [{"Ref": "RunOn"}, "ec2"]},
                "Assertions": [{"Assert": {"Fn::Not": [{"Fn::Equals": [{"Ref": "SubnetId"}, ""]}]},
                                "AssertDescription": "RunOn=ec2 runs the jobs on EMR clusters: give SubnetId"}]},
        },
        "Resources": resources,
        "Outputs": {
            "VaultUri": {"Value": sub(VAULT_URI)},
            "Artifacts": {"Value": sub("s3://${ArtifactsBucket}/artifacts/${ArtifactsVersion}")},
            "ServerlessApplicationId": {"Value": {"Ref": "ServerlessApplication"}},
            "AlarmTopicArn": {"Value": {"Ref": "AlarmTopic"}},
            "ChangeSinkRoleArn": {"Value": {"Fn::GetAtt": ["ChangeSinkRole", "Arn"]}},
            "ChangeSinkDestination": {"Value": sub(CHANGE_SINK_DESTINATION)},
            "NativeExportsUri": {"Value": sub(EXPORTS_URI)},
            **{f"{name}RoleArn": {"Value": {"Fn::GetAtt": [f"{name}Role", "Arn"]}} for name in JOBS},
            **{m: {"Value": {"Ref": m}} for m in machine_ids()},
        },
    }


def change_sink() -> Dict[str, Any]:
    """The source region's small stack: the change-source Lambda and its event source mapping on the table's stream
    (a mapping must be in the stream's region), running as the main stack's ChangeSinkRole."""
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "ddbvault: the change-source Lambda, in the table's (source) region. Generated by "
                       "emr/build_stack.py; deploy emr/ddbvault.json (recovery region) first for its outputs.",
        "Parameters": {
            "StreamArn": {"Type": "String", "Description": "the table's stream ARN (NEW_AND_OLD_IMAGES)"},
            "ChangeSinkRoleArn": {"Type": "String", "Description": "the main stack's output ChangeSinkRoleArn"},
            "Destination": {"Type": "String", "AllowedPattern": "s3://[^/]+/.+[^/]",
                            "Description": "the main stack's output ChangeSinkDestination"},
            "CodeBucket": {"Type": "String", "Description": "a bucket in this region holding lambda.zip"},
            "CodeKey": {"Type": "String", "Description": "its key, for example ddbvault/<version>/lambda.zip"},
        },
        "Resources": {
            "ChangeSink": {"Type": "AWS::Lambda::Function", "Properties": {
                "Description": "ddbvault: lands the table's stream batches in the vault bucket",
                "Runtime": "python3.12", "Handler": "ddbvault.changes.lambda_sink.handler",
                "Role": {"Ref": "ChangeSinkRoleArn"}, "Timeout": 300, "MemorySize": 512,
                "Code": {"S3Bucket": {"Ref": "CodeBucket"}, "S3Key": {"Ref": "CodeKey"}},
                "Environment": {"Variables": {"DDBVAULT_DESTINATION": {"Ref": "Destination"}}}}},
            "ChangeSinkLogs": {"Type": "AWS::Logs::LogGroup", "Properties": {
                "LogGroupName": {"Fn::Sub": "/aws/lambda/${ChangeSink}"}, "RetentionInDays": 30}},
            "StreamMapping": {"Type": "AWS::Lambda::EventSourceMapping", "DependsOn": "ChangeSinkLogs", "Properties": {
                "FunctionName": {"Ref": "ChangeSink"}, "EventSourceArn": {"Ref": "StreamArn"},
                "StartingPosition": "TRIM_HORIZON", "BatchSize": 1000, "MaximumBatchingWindowInSeconds": 10,
                # Retried from the first record not landed until it lands or leaves the stream (24 h): the merge
                # drops a record it already holds, and a gap is what it refuses.
                "FunctionResponseTypes": ["ReportBatchItemFailures"], "MaximumRetryAttempts": -1}},
        },
    }


OUTPUTS = {OUT: template, "change_sink.json": change_sink}


def main(argv: List[str]) -> int:
    stale = []
    for name, build in OUTPUTS.items():
        path = os.path.join(HERE, name)
        text = json.dumps(build(), indent=1) + "\n"
        current = open(path, encoding="utf-8").read() if os.path.exists(path) else None
        if current == text:
            continue
        stale.append(f"emr/{name}")
        if argv != ["--check"]:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
    if argv == ["--check"] and stale:
        print(f"out of date (run python3 emr/build_stack.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
