"""Writes emr/configurations.json and emr/stepfunctions/*.asl.json from one description (stdlib only).

    python3 emr/build_stepfunctions.py          # rewrite the files
    python3 emr/build_stepfunctions.py --check  # exit 1 if a committed file differs from what this writes

The Spark settings live here once; every state machine and configurations.json get the same ones. Every machine:

- fills in its optional input fields (defaults merged under the input, `States.JsonMerge`), then checks every field
  with a Choice and ends in a Fail state naming the field *before* a cluster exists: a JSONPath missing from the
  input raises States.Runtime, which `Catch: States.ALL` does not catch, so a cluster created before the check
  would be left running;
- passes every step argument as a string (`States.Format('{}', $.n)` for numbers) and the execution's name as the
  job's `--run-id`, so `<vault>/_ddbvault/runs/<execution name>.json` is the execution's run record;
- creates the cluster with an idle `AutoTerminationPolicy` (the backstop for a stopped or timed-out execution, which
  runs no Catch), runs each step with a timeout and a Catch, and terminates the cluster with retries on every path.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
HOUR = 3600

SPARK_DEFAULTS = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    "spark.sql.session.timeZone": "UTC",
    "spark.task.maxFailures": "4",
    "spark.python.worker.reuse": "true",
    # YARN's second application attempt would start the job again from the top: a whole-table scan (or load) more
    # against the table's capacity. A failed job fails the step; a rerun resumes from what the first one staged.
    "spark.yarn.maxAppAttempts": "1",
    # A speculative copy of a scan or load task spends the budget twice on the same segment.
    "spark.speculation": "false",
    # S3A's default (delete) removes every parent "directory marker" after each file it writes: DeleteObjects on keys
    # above the vault's prefix, which the job's role does not (and should not) grant. tests/test_iam.py runs so too.
    "spark.hadoop.fs.s3a.directory.marker.retention": "keep",
}
CONFIGURATIONS = [
    {"Classification": "delta-defaults", "Properties": {"delta.enabled": "true"}},
    {"Classification": "spark-defaults", "Properties": SPARK_DEFAULTS},
]

# (field, what it is): strings every machine needs.
REQUIRED = [
    ("table", "the DynamoDB table's name"),
    ("region", "the table's region"),
    ("vaultBucket", "the vault's S3 bucket"),
    ("vaultPrefix", "the vault's key prefix in that bucket, without a leading or trailing slash"),
    ("vaultRegion", "the vault bucket's region"),
    ("artifacts", "the S3 folder holding what `make package` built, s3://bucket/ddbvault/<version> without a "
                  "trailing slash"),
    ("logUri", "the S3 folder for the jobs' logs, s3://..."),
]
# EMR on EC2 only.
CLUSTER_REQUIRED = [
    ("subnetId", "the cluster's subnet"),
    ("release", "the EMR release label, for example emr-7.12.0"),
]
# EMR Serverless only (plus each step's `<step>RoleArn`, the job's own role).
SERVERLESS_REQUIRED = [("applicationId", "the EMR Serverless application's id")]
# Shapes a string must have (StringMatches, `*` any run of characters), so a typo fails before a cluster starts
# rather than in its first step: S3 folders without a trailing slash (the machines add "/...").
SHAPES = {
    "vaultBucket": (["*"], ["*/*", "s3:*"]),
    "vaultPrefix": (["*"], ["/*", "*/"]),
    "artifacts": (["s3://*/*"], ["*/"]),
    "logUri": (["s3://*"], []),
}
# Numbers with a default, merged under the input before the checks (lockWaitSeconds: machines whose job takes the
# vault's writer lease, so a scheduled merge waits for a running export instead of failing).
DEFAULTS = {"idleTimeoutSeconds": HOUR, "coreInstanceCount": 2}
LOCK_DEFAULTS = {"lockWaitSeconds": 600}
# What EMR (IdleTimeout: 60 s to 7 days) and the jobs accept, checked before the cluster too.
# Strings with a default (EMR on EC2): the cluster's EMR service role and its EC2 instance profile (the job's role:
# the stack passes the job's own instance profile).
STRING_DEFAULTS = {"serviceRole": "EMR_DefaultRole", "instanceProfile": "EMR_EC2_DefaultRole"}
RANGES = {"idleTimeoutSeconds": (60, 7 * 24 * HOUR), "coreInstanceCount": (1, 256), "lockWaitSeconds": (0, 24 * HOUR)}


class Step:
    """One job run as an EMR step."""

    def __init__(self, name: str, script: str, timeout_s: int, *, run_suffix: str = "",
                 budget: Optional[Tuple[str, str, str, str]] = None, lock_wait: bool = False,
                 extra: Tuple[str, ...] = ()) -> None:
        self.name, self.script, self.timeout_s, self.run_suffix = name, script, timeout_s, run_suffix
        # (input field, its flag, the job's other budget flag, that flag's value when the field is absent)
        self.budget, self.lock_wait, self.extra = budget, lock_wait, extra

    @property
    def budget_path(self) -> str:
        return f"$.budget{self.name}"


READ_BUDGET = ("maxReadUnits", "--max-read-units", "--read-percent", "50")
WRITE_BUDGET = ("maxWriteUnits", "--max-write-units", "--write-percent", "80")
EXPORT = Step("Export", "export_table.py", 20 * HOUR, budget=READ_BUDGET, lock_wait=True,
              extra=("--require-stream",))
MERGE = Step("Merge", "merge_increments.py", 2 * HOUR, lock_wait=True)
RESTORE = Step("Restore", "restore_table.py", 20 * HOUR, budget=WRITE_BUDGET)
VERIFY = Step("Verify", "verify_replica.py", 20 * HOUR, run_suffix=".verify")

MACHINES = {
    "export": ("export a DynamoDB table into its vault", "ddbvault.ExportFailed",
               "The export step failed: the vault's items are unchanged; a rerun resumes from the staged segments. "
               "The step's stderr (last line) and the run record name the cause.", [EXPORT]),
    "merge": ("merge a table's stream into its vault", "ddbvault.MergeFailed",
              "The merge step failed: the vault is as the last committed merge left it; the next merge resumes from "
              "the committed checkpoint. The step's stderr (last line) and the run record name the cause.", [MERGE]),
    "restore": ("rebuild a table in the recovery region from its vault", "ddbvault.RestoreFailed",
                "The restore step failed; a rerun resumes where it stopped. The step's stderr (last line) and the "
                "run record name the cause.", [RESTORE]),
    "recover": ("the recovery runbook: rebuild a table from its vault, then verify it", "ddbvault.RecoverFailed",
                "The restore or the verify step failed (the failed state's name says which); a restore rerun "
                "resumes where it stopped, a verify mismatch is repaired by restore_table --existing-table. The "
                "step's stderr (last line) and the run records name the cause.", [RESTORE, VERIFY]),
}

TERMINATE = "arn:aws:states:::elasticmapreduce:terminateCluster.sync"
GET_OBJECT = "arn:aws:states:::aws-sdk:s3:getObject"
# EMR Serverless: Delta's jars are in the image (EMR 7: delta-spark.jar and delta-storage.jar), the package's
# archive holds boto3 and botocore at the bootstrap's pins, unpacked beside the driver and every executor.
EMR_DELTA_LIB = "/usr/share/aws/delta/lib"
SERVERLESS_DELTA_JARS = ("delta-spark.jar", "delta-storage.jar")
DEPS_ARCHIVE = "pydeps.tar.gz"
# ddbvault's JVM codec (``make jvm``), shipped by ``make package`` beside ddbvault.zip: the export's items are
# parsed in the JVM with it (without it the export still works, parsing them in Python at about 1.5x the CPU).
JVM_JAR = "ddbvault-jvm.jar"
DEPS_DIR = "pydeps"


def _not_present(path: str) -> Dict[str, Any]:
    return {"Not": {"Variable": path, "IsPresent": True}}


def defaults(steps: List[Step], serverless: bool = False) -> Dict[str, Any]:
    """Numeric defaults (range-checked)."""
    return {**({} if serverless else DEFAULTS), **(LOCK_DEFAULTS if any(s.lock_wait for s in steps) else {})}


def required(steps: List[Step], serverless: bool) -> List[Tuple[str, str]]:
    if not serverless:
        return REQUIRED + CLUSTER_REQUIRED
    roles = [(role_field(s), f"the {s.script[:-3]} job's IAM role ARN (the stack's {s.name}Role)") for s in steps]
    return REQUIRED + SERVERLESS_REQUIRED + roles


def role_field(step: Step) -> str:
    return f"{step.name.lower()}RoleArn"


def validate(steps: List[Step], serverless: bool = False) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The Choice that checks the input, and its Fail states. Present is tested first, in a rule of its own: a
    type test on a missing field would itself raise States.Runtime."""
    choices: List[Dict[str, Any]] = []
    fails: Dict[str, Any] = {}

    def bad(field: str, wanted: str, what: str, optional: bool = False) -> str:
        name = f"BadInput_{field}"
        fails[name] = {"Type": "Fail", "Error": "ddbvault.BadInput",
                       "Cause": f"The input field {field!r} ({what}) {'is' if optional else 'is missing or is'} not "
                                f"{wanted}. No cluster was created."}
        return name

    for field, what in required(steps, serverless):
        name = bad(field, "a string of that form" if field in SHAPES else "a string", what)
        choices.append({**_not_present(f"$.{field}"), "Next": name})
        choices.append({"Not": {"Variable": f"$.{field}", "IsString": True}, "Next": name})
        if field in SHAPES:
            good, refused = SHAPES[field]
            rules = [{"Variable": f"$.{field}", "StringMatches": g} for g in good]
            choices.append({"Not": rules[0] if len(rules) == 1 else {"Or": rules}, "Next": name})
            choices.extend({"Variable": f"$.{field}", "StringMatches": r, "Next": name} for r in refused)
    for field, value in ({} if serverless else STRING_DEFAULTS).items():
        name = bad(field, "a string", f"optional, default {value}", optional=True)
        choices.append({"Not": {"Variable": f"$.{field}", "IsString": True}, "Next": name})
    for field, value in defaults(steps, serverless).items():
        low, high = RANGES[field]
        name = bad(field, f"a number from {low} to {high}", f"optional, default {value}", optional=True)
        choices.append({"Not": {"Variable": f"$.{field}", "IsNumeric": True}, "Next": name})
        choices.append({"Or": [{"Variable": f"$.{field}", "NumericLessThan": low},
                               {"Variable": f"$.{field}", "NumericGreaterThan": high}], "Next": name})
    for field in sorted({s.budget[0] for s in steps if s.budget}):
        bad(field, "a number or a numeric string", "optional, units per second for the whole job", optional=True)
    return {"Type": "Choice", "Choices": choices}, fails


def create_cluster(kind: str, first: str) -> Dict[str, Any]:
    return {
        "Type": "Task",
        "Resource": "arn:aws:states:::elasticmapreduce:createCluster.sync",
        "Parameters": {
            "Name.$": f"States.Format('ddbvault-{kind}-{{}}', $.table)",
            "ReleaseLabel.$": "$.release",
            "Applications": [{"Name": "Spark"}],
            "LogUri.$": "$.logUri",
            "ServiceRole.$": "$.serviceRole",
            "JobFlowRole.$": "$.instanceProfile",
            "VisibleToAllUsers": True,
            "Configurations": CONFIGURATIONS,
            "BootstrapActions": [{"Name": "boto3", "ScriptBootstrapAction": {
                "Path.$": "States.Format('{}/bootstrap.sh', $.artifacts)"}}],
            # The backstop for an execution that is stopped or times out: it runs no Catch, so no Terminate.
            "AutoTerminationPolicy": {"IdleTimeout.$": "$.idleTimeoutSeconds"},
            "Tags": [{"Key": "ddbvault:execution", "Value.$": "$$.Execution.Name"}],
            "Instances": {
                "KeepJobFlowAliveWhenNoSteps": True,
                "Ec2SubnetId.$": "$.subnetId",
                "InstanceGroups": [
                    {"Name": "primary", "InstanceRole": "MASTER", "InstanceType": "m6g.xlarge", "InstanceCount": 1},
                    {"Name": "core", "InstanceRole": "CORE", "InstanceType": "m6g.2xlarge",
                     "InstanceCount.$": "$.coreInstanceCount"},
                ],
            },
        },
        "ResultSelector": {"ClusterId.$": "$.ClusterId"},
        "ResultPath": "$.cluster",
        # A cluster that fails to start (bootstrap included) terminates itself: nothing to clean up.
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "ClusterFailed"}],
        "Next": first,
    }


def run_id(step: Step) -> str:
    if not step.run_suffix:
        return "$$.Execution.Name"
    return f"States.Format('{{}}{step.run_suffix}', $$.Execution.Name)"


def job_args(step: Step) -> List[str]:
    """The job's own arguments (intrinsic-function arguments, all strings)."""
    args = ["'--table'", "$.table", "'--region'", "$.region", "'--vault'", "$.location.vault",
            "'--vault-region'", "$.vaultRegion", "'--run-id'", run_id(step), "'--metrics'"]
    if step.budget:
        args += [f"{step.budget_path}.flag", f"{step.budget_path}.value"]
    if step.lock_wait:
        args += ["'--lock-wait'", "States.Format('{}', $.lockWaitSeconds)"]
    return args + [f"'{flag}'" for flag in step.extra]


def add_step(step: Step, next_state: str) -> Dict[str, Any]:
    args = ["'spark-submit'", "'--deploy-mode'", "'cluster'",
            "'--py-files'", "States.Format('{}/ddbvault.zip', $.artifacts)",
            "'--jars'", f"States.Format('{{}}/{JVM_JAR}', $.artifacts)",
            f"States.Format('{{}}/jobs/{step.script}', $.artifacts)", *job_args(step)]
    return {
        "Type": "Task",
        "Resource": "arn:aws:states:::elasticmapreduce:addStep.sync",
        "Parameters": {
            "ClusterId.$": "$.cluster.ClusterId",
            "Step": {
                "Name.$": f"States.Format('{step.name.lower()} {{}}', $.table)",
                "ActionOnFailure": "CONTINUE",
                "HadoopJarStep": {"Jar": "command-runner.jar", "Args.$": f"States.Array({', '.join(args)})"},
            },
        },
        "TimeoutSeconds": step.timeout_s,
        "ResultPath": f"$.step{step.name}",
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": f"TerminateAfter{step.name}Failed"}],
        "Next": next_state,
    }


def serverless_submit_parameters() -> str:
    """spark-submit flags for EMR Serverless: Delta from the image's jars, the same Spark settings as the clusters
    (less YARN's), and boto3 from the package's archive (the image's is older than ddbvault's floor)."""
    conf = {"spark.jars": ",".join([*(f"{EMR_DELTA_LIB}/{jar}" for jar in SERVERLESS_DELTA_JARS), f"{{}}/{JVM_JAR}"])}
    conf.update({k: v for k, v in SPARK_DEFAULTS.items() if not k.startswith("spark.yarn.")})
    return " ".join(f"--conf {k}={v}" for k, v in conf.items())


def start_job_run(step: Step, next_state: str) -> Dict[str, Any]:
    archive = f"{{}}/{DEPS_ARCHIVE}#{DEPS_DIR}"
    submit = (f"--conf spark.submit.pyFiles={{}}/ddbvault.zip --conf spark.archives={archive} "
              f"--conf spark.emr-serverless.driverEnv.PYTHONPATH=./{DEPS_DIR} "
              f"--conf spark.executorEnv.PYTHONPATH=./{DEPS_DIR} {serverless_submit_parameters()}")
    return {
        "Type": "Task",
        "Resource": "arn:aws:states:::emr-serverless:startJobRun.sync",
        "Parameters": {
            "ApplicationId.$": "$.applicationId",
            "ExecutionRoleArn.$": f"$.{role_field(step)}",
            "Name.$": f"States.Format('{step.name.lower()} {{}}', $.table)",
            "ClientToken.$": "States.UUID()",
            "ExecutionTimeoutMinutes": step.timeout_s // 60,
            "JobDriver": {"SparkSubmit": {
                "EntryPoint.$": f"States.Format('{{}}/jobs/{step.script}', $.artifacts)",
                "EntryPointArguments.$": f"States.Array({', '.join(job_args(step))})",
                "SparkSubmitParameters.$": f"States.Format('{submit}', $.artifacts, $.artifacts, $.artifacts)"}},
            "ConfigurationOverrides": {"MonitoringConfiguration": {"S3MonitoringConfiguration": {
                "LogUri.$": "$.logUri"}}},
        },
        "TimeoutSeconds": step.timeout_s + 600,
        "ResultSelector": {"JobRunId.$": "$.JobRunId"},
        "ResultPath": f"$.step{step.name}",
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": f"Read{step.name}Failure"}],
        "Next": next_state,
    }


def record_key(step: Step) -> str:
    return f"States.Format('{{}}/_ddbvault/runs/{{}}{step.run_suffix}.json', $.vaultPrefix, $$.Execution.Name)"


def read_run(step: Step, next_state: str) -> Dict[str, Any]:
    """The job's run record read back into the execution (`$.run<Step>.summary`). Unreadable, the execution goes
    on (the job itself succeeded): `$.run<Step>` then holds the read's Error and Cause instead."""
    return {
        "Type": "Task",
        "Resource": GET_OBJECT,
        "Parameters": {"Bucket.$": "$.vaultBucket", "Key.$": record_key(step)},
        "ResultSelector": {"summary.$": "States.StringToJson($.Body)"},
        "ResultPath": f"$.run{step.name}",
        "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 2, "MaxAttempts": 3, "BackoffRate": 2}],
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": f"$.run{step.name}", "Next": next_state}],
        "Next": next_state,
    }


def read_failure(step: Step, error: str, cause: str) -> Dict[str, Any]:
    """After a failed job (and its cluster's termination): its run record read back, so the execution fails with the
    job's own one-line error in its Cause; without a readable record, with the machine's general Cause."""
    name = step.name
    quoted = cause.replace("\\", "\\\\").replace("'", "\\'").replace("{", "\\{").replace("}", "\\}")
    return {
        f"Read{name}Failure": {**read_run(step, f"{name}FailureRecorded"), "ResultPath": "$.failedRun",
                               "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.failedRun",
                                          "Next": f"{name}FailureRecorded"}]},
        # Present first, then its type: a type test on a missing field would raise States.Runtime.
        f"{name}FailureRecorded": {"Type": "Choice", "Default": f"{name}FailedWithJobError", "Choices": [
            {**_not_present("$.failedRun.summary.error"), "Next": f"{name}Failed"},
            {"Not": {"Variable": "$.failedRun.summary.error", "IsString": True}, "Next": f"{name}Failed"}]},
        f"{name}FailedWithJobError": {"Type": "Fail", "Error": error,
                                      "CausePath": f"States.Format('{quoted} The job: {{}}', "
                                                   f"$.failedRun.summary.error)"},
        f"{name}Failed": {"Type": "Fail", "Error": error, "Cause": cause},
    }


def terminate(next_state: str) -> Dict[str, Any]:
    return {
        "Type": "Task",
        "Resource": TERMINATE,
        "Parameters": {"ClusterId.$": "$.cluster.ClusterId"},
        "ResultPath": None,
        "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 30, "MaxAttempts": 6, "BackoffRate": 2,
                   "MaxDelaySeconds": 300}],
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.terminateError", "Next": "TerminateFailed"}],
        "Next": next_state,
    }


def budget_states(step: Step, next_state: str) -> Dict[str, Any]:
    field, flag, other, default = step.budget
    return {
        # Absent, the job's own percent default applies; present, a number or a string (the job checks its value).
        f"Budget{step.name}": {"Type": "Choice",
                               "Choices": [{**_not_present(f"$.{field}"), "Next": f"Budget{step.name}Default"},
                                           {"Variable": f"$.{field}", "IsNumeric": True,
                                            "Next": f"Budget{step.name}Given"},
                                           {"Variable": f"$.{field}", "IsString": True,
                                            "Next": f"Budget{step.name}Given"}],
                               "Default": f"BadInput_{field}"},
        f"Budget{step.name}Given": {"Type": "Pass", "ResultPath": step.budget_path, "Next": next_state,
                                    "Parameters": {"flag": flag, "value.$": f"States.Format('{{}}', $.{field})"}},
        f"Budget{step.name}Default": {"Type": "Pass", "ResultPath": step.budget_path, "Next": next_state,
                                      "Result": {"flag": other, "value": default}},
    }


def machine(kind: str, serverless: bool = False) -> Dict[str, Any]:
    what, error, cause, steps = MACHINES[kind]
    numbers = defaults(steps, serverless)
    strings = {} if serverless else STRING_DEFAULTS
    optional = list(numbers) + list(strings) + sorted({s.budget[0] for s in steps if s.budget})
    states: Dict[str, Any] = {
        "Defaults": {"Type": "Pass", "Next": "ApplyDefaults",
                     "Parameters": {"defaults": {**numbers, **strings}, "input.$": "$"}},
        # The input's own values win (the last argument of States.JsonMerge).
        "ApplyDefaults": {"Type": "Pass", "Next": "Validate", "OutputPath": "$.merged",
                          "Parameters": {"merged.$": "States.JsonMerge($.defaults, $.input, false)"}},
    }
    check, fails = validate(steps, serverless)
    budgeted = [s for s in steps if s.budget]
    first = steps[0].name if serverless else "CreateCluster"
    after_checks = [f"Budget{s.name}" for s in budgeted] + [first]
    states["Validate"] = {**check, "Default": "Locate"}
    # The vault's URI, as the jobs take it, from its bucket and prefix (which the run records are read back by).
    states["Locate"] = {"Type": "Pass", "ResultPath": "$.location", "Next": after_checks[0], "Parameters": {
        "vault.$": "States.Format('s3://{}/{}', $.vaultBucket, $.vaultPrefix)"}}
    for i, step in enumerate(budgeted):
        states.update(budget_states(step, after_checks[i + 1]))
    end = "Done" if serverless else "Terminate"
    if not serverless:
        states["CreateCluster"] = create_cluster(kind, steps[0].name)
    for i, step in enumerate(steps):
        after = steps[i + 1].name if i + 1 < len(steps) else end
        states[step.name] = (start_job_run if serverless else add_step)(step, f"Read{step.name}Run")
        states[f"Read{step.name}Run"] = read_run(step, after)
    records = [f"States.Format('{{}}/_ddbvault/runs/{{}}{s.run_suffix}.json', $.location.vault, $$.Execution.Name)"
               for s in steps]
    done = {"table.$": "$.table", "vault.$": "$.location.vault",
            "runRecords.$": f"States.Array({', '.join(records)})",
            "runs.$": f"States.Array({', '.join(f'$.run{s.name}' for s in steps)})"}
    if not serverless:
        done["clusterId.$"] = "$.cluster.ClusterId"
        states["Terminate"] = terminate("Done")
    states["Done"] = {"Type": "Pass", "End": True, "Parameters": done}
    for step in steps:
        if not serverless:
            states[f"TerminateAfter{step.name}Failed"] = terminate(f"Read{step.name}Failure")
        states.update(read_failure(step, error, cause))
    if not serverless:
        states["ClusterFailed"] = {
            "Type": "Fail", "Error": "ddbvault.ClusterFailed",
            "Cause": "The EMR cluster did not start (the execution's history holds EMR's reason); nothing was run. "
                     "A cluster that fails to bootstrap terminates itself."}
        states["TerminateFailed"] = {
            "Type": "Fail", "Error": "ddbvault.ClusterNotTerminated",
            "Cause": "Terminating the cluster failed after retries: terminate it yourself (its id is in the "
                     "execution's output of CreateCluster and its tag ddbvault:execution names this execution); "
                     "its idle auto-termination ends it otherwise."}
    states.update(fails)
    total = sum(s.timeout_s for s in steps) + 2 * HOUR
    where = ("as EMR Serverless job runs (each with its job's own role)" if serverless
             else "on a transient EMR cluster that is terminated on every path")
    return {
        "Comment": f"ddbvault: {what}, {where}. Generated by emr/build_stepfunctions.py. "
                   f"Input: {', '.join(f for f, _ in required(steps, serverless))}; optional: {', '.join(optional)}. "
                   f"Output: the run records, read back from the vault.",
        "StartAt": "Defaults",
        "TimeoutSeconds": total,
        "States": states,
    }


def render(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"


def outputs() -> Dict[str, str]:
    """Each generated file's path (relative to emr/) and its text."""
    files = {"configurations.json": render(CONFIGURATIONS)}
    for kind in MACHINES:
        files[os.path.join("stepfunctions", f"{kind}.asl.json")] = render(machine(kind))
        files[os.path.join("stepfunctions", f"{kind}-serverless.asl.json")] = render(machine(kind, serverless=True))
    return files


def main(argv: List[str]) -> int:
    check = argv == ["--check"]
    stale = []
    for rel, text in outputs().items():
        path = os.path.join(HERE, rel)
        current = open(path, encoding="utf-8").read() if os.path.exists(path) else None
        if current == text:
            continue
        stale.append(rel)
        if not check:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
    if check and stale:
        print(f"out of date (run python3 emr/build_stepfunctions.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
