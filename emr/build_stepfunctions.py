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
}
CONFIGURATIONS = [
    {"Classification": "delta-defaults", "Properties": {"delta.enabled": "true"}},
    {"Classification": "spark-defaults", "Properties": SPARK_DEFAULTS},
]

# (field, what it is): strings every machine needs.
REQUIRED = [
    ("table", "the DynamoDB table's name"),
    ("region", "the table's region"),
    ("vault", "the vault's URI, s3://bucket/prefix without a trailing slash"),
    ("vaultRegion", "the vault bucket's region"),
    ("artifacts", "the S3 folder holding what `make package` built, s3://bucket/ddbvault/<version> without a "
                  "trailing slash"),
    ("logUri", "the S3 folder for the cluster's logs, s3://..."),
    ("subnetId", "the cluster's subnet"),
    ("release", "the EMR release label, for example emr-7.12.0"),
]
# Shapes a string must have (StringMatches, `*` any run of characters), so a typo fails before a cluster starts
# rather than in its first step: S3 folders without a trailing slash (the machines add "/...").
SHAPES = {
    "vault": (["s3://*/*", "s3a://*/*"], ["*/"]),
    "artifacts": (["s3://*/*"], ["*/"]),
    "logUri": (["s3://*"], []),
}
# Numbers with a default, merged under the input before the checks (lockWaitSeconds: machines whose job takes the
# vault's writer lease, so a scheduled merge waits for a running export instead of failing).
DEFAULTS = {"idleTimeoutSeconds": HOUR, "coreInstanceCount": 2}
LOCK_DEFAULTS = {"lockWaitSeconds": 600}
# What EMR (IdleTimeout: 60 s to 7 days) and the jobs accept, checked before the cluster too.
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


def _not_present(path: str) -> Dict[str, Any]:
    return {"Not": {"Variable": path, "IsPresent": True}}


def defaults(steps: List[Step]) -> Dict[str, Any]:
    return {**DEFAULTS, **(LOCK_DEFAULTS if any(s.lock_wait for s in steps) else {})}


def validate(steps: List[Step]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
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

    for field, what in REQUIRED:
        name = bad(field, "a string of that form" if field in SHAPES else "a string", what)
        choices.append({**_not_present(f"$.{field}"), "Next": name})
        choices.append({"Not": {"Variable": f"$.{field}", "IsString": True}, "Next": name})
        if field in SHAPES:
            good, refused = SHAPES[field]
            rules = [{"Variable": f"$.{field}", "StringMatches": g} for g in good]
            choices.append({"Not": rules[0] if len(rules) == 1 else {"Or": rules}, "Next": name})
            choices.extend({"Variable": f"$.{field}", "StringMatches": r, "Next": name} for r in refused)
    for field, value in defaults(steps).items():
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
            "ServiceRole": "EMR_DefaultRole",
            "JobFlowRole": "EMR_EC2_DefaultRole",
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


def add_step(step: Step, next_state: str) -> Dict[str, Any]:
    args = ["'spark-submit'", "'--deploy-mode'", "'cluster'", "'--py-files'",
            "States.Format('{}/ddbvault.zip', $.artifacts)", f"States.Format('{{}}/jobs/{step.script}', $.artifacts)",
            "'--table'", "$.table", "'--region'", "$.region", "'--vault'", "$.vault",
            "'--vault-region'", "$.vaultRegion", "'--run-id'", run_id(step)]
    if step.budget:
        args += [f"{step.budget_path}.flag", f"{step.budget_path}.value"]
    if step.lock_wait:
        args += ["'--lock-wait'", "States.Format('{}', $.lockWaitSeconds)"]
    args += [f"'{flag}'" for flag in step.extra]
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


def machine(kind: str) -> Dict[str, Any]:
    what, error, cause, steps = MACHINES[kind]
    optional = list(defaults(steps)) + sorted({s.budget[0] for s in steps if s.budget})
    states: Dict[str, Any] = {
        "Defaults": {"Type": "Pass", "Next": "ApplyDefaults",
                     "Parameters": {"defaults": defaults(steps), "input.$": "$"}},
        # The input's own values win (the last argument of States.JsonMerge).
        "ApplyDefaults": {"Type": "Pass", "Next": "Validate", "OutputPath": "$.merged",
                          "Parameters": {"merged.$": "States.JsonMerge($.defaults, $.input, false)"}},
    }
    check, fails = validate(steps)
    budgeted = [s for s in steps if s.budget]
    after_checks = [f"Budget{s.name}" for s in budgeted] + ["CreateCluster"]
    states["Validate"] = {**check, "Default": after_checks[0]}
    for i, step in enumerate(budgeted):
        states.update(budget_states(step, after_checks[i + 1]))
    states["CreateCluster"] = create_cluster(kind, steps[0].name)
    for i, step in enumerate(steps):
        states[step.name] = add_step(step, steps[i + 1].name if i + 1 < len(steps) else "Terminate")
    states["Terminate"] = terminate("Done")
    records = [f"States.Format('{{}}/_ddbvault/runs/{{}}{s.run_suffix}.json', $.vault, $$.Execution.Name)"
               for s in steps]
    states["Done"] = {"Type": "Pass", "End": True, "Parameters": {
        "table.$": "$.table", "vault.$": "$.vault", "clusterId.$": "$.cluster.ClusterId",
        "runRecords.$": f"States.Array({', '.join(records)})"}}
    for step in steps:
        states[f"TerminateAfter{step.name}Failed"] = terminate(f"{step.name}Failed")
        states[f"{step.name}Failed"] = {"Type": "Fail", "Error": error, "Cause": cause}
    states["ClusterFailed"] = {"Type": "Fail", "Error": "ddbvault.ClusterFailed",
                               "Cause": "The EMR cluster did not start (the execution's history holds EMR's reason); "
                                        "nothing was run. A cluster that fails to bootstrap terminates itself."}
    states["TerminateFailed"] = {"Type": "Fail", "Error": "ddbvault.ClusterNotTerminated",
                                 "Cause": "Terminating the cluster failed after retries: terminate it yourself (its "
                                          "id is in the execution's output of CreateCluster and its tag "
                                          "ddbvault:execution names this execution); its idle auto-termination "
                                          "ends it otherwise."}
    states.update(fails)
    total = sum(s.timeout_s for s in steps) + 2 * HOUR
    return {
        "Comment": f"ddbvault: {what}, on a transient EMR cluster that is terminated on every path. "
                   f"Generated by emr/build_stepfunctions.py. Input: {', '.join(f for f, _ in REQUIRED)}; "
                   f"optional: {', '.join(optional)}.",
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
