"""The deployment artefacts are real: every path of every state machine (success, a failed step, bad input, a
missing optional field, a failing termination) ends with the cluster terminated or never created, the steps run
the jobs with flags the jobs accept, the committed JSON is what emr/build_stepfunctions.py writes, and the package
`--py-files` ships imports on its own.

The machines run in a small interpreter of the Amazon States Language written here, for the states and intrinsic
functions they use. It keeps the one rule that matters most: a JSONPath missing from the input raises
States.Runtime, which `States.ALL` does not catch (the execution fails on the spot, a cluster left running)."""
from __future__ import annotations

import argparse
import copy
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set

import pytest

from ddbvault import cli
from ddbvault.runner import run_job

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ("export", "merge", "restore", "recover")
EMR = "arn:aws:states:::elasticmapreduce:"
CREATE, ADD_STEP, TERMINATE = EMR + "createCluster.sync", EMR + "addStep.sync", EMR + "terminateCluster.sync"
EXECUTION = "nightly-orders.2026-11-27"
ARTIFACTS = "s3://artifacts/ddbvault/0.1.0"
GET_OBJECT = "arn:aws:states:::aws-sdk:s3:getObject"
JOB_ERROR = "table orders does not exist in region eu-west-1: check --table and --region"
START_JOB_RUN = "arn:aws:states:::emr-serverless:startJobRun.sync"
VAULT = "s3://vault-bucket/teams/orders"
INPUT = {"table": "orders", "region": "eu-west-1", "vaultBucket": "vault-bucket", "vaultPrefix": "teams/orders",
         "vaultRegion": "eu-west-2", "artifacts": ARTIFACTS, "logUri": "s3://logs/emr/", "subnetId": "subnet-1",
         "release": "emr-7.12.0"}
REQUIRED = sorted(INPUT)
ROLES = {"Export": "arn:aws:iam::1:role/export", "Merge": "arn:aws:iam::1:role/merge",
         "Restore": "arn:aws:iam::1:role/restore", "Verify": "arn:aws:iam::1:role/verify"}
SERVERLESS_INPUT = {**{k: v for k, v in INPUT.items() if k not in ("subnetId", "release")}, "applicationId": "00app",
                    **{f"{step.lower()}RoleArn": arn for step, arn in ROLES.items()}}
# Each machine's steps: (state, script, the run id it must be given, its budget input field or None).
STEPS = {
    "export": [("Export", "export_table.py", EXECUTION, "maxReadUnits")],
    "merge": [("Merge", "merge_increments.py", EXECUTION, None)],
    "restore": [("Restore", "restore_table.py", EXECUTION, "maxWriteUnits")],
    "recover": [("Restore", "restore_table.py", EXECUTION, "maxWriteUnits"),
                ("Verify", "verify_replica.py", EXECUTION + ".verify", None)],
}
DEFAULT_BUDGET = {"maxReadUnits": ["--read-percent", "50"], "maxWriteUnits": ["--write-percent", "80"]}
GIVEN_BUDGET = {"maxReadUnits": "--max-read-units", "maxWriteUnits": "--max-write-units"}


def load(kind: str) -> Dict[str, Any]:
    """A committed machine: ``export`` (EMR on EC2) or ``export-serverless``."""
    with open(os.path.join(ROOT, "emr", "stepfunctions", f"{kind}.asl.json"), encoding="utf-8") as handle:
        return json.load(handle)


def module(path: str):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3].replace(".", "_"), path)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


# -- a small States Language interpreter ---------------------------------------------------------------------------

class StatesError(Exception):
    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(f"{error}: {cause}")
        self.error, self.cause = error, cause


MISSING = object()


def path_get(path: str, data: Any, context: Dict[str, Any]) -> Any:
    """`$`, `$.a.b` on the state's data, `$$.a.b` on the context object; a missing field raises States.Runtime."""
    root, rest = (context, path[2:]) if path.startswith("$$") else (data, path[1:])
    value = root
    for part in filter(None, rest.split(".")):
        if not isinstance(value, dict) or part not in value:
            raise StatesError("States.Runtime", f"the JSONPath {path} could not be found in the input")
        value = value[part]
    return value


def path_set(data: Any, path: Optional[str], result: Any) -> Any:
    """ResultPath: null keeps the input, `$` replaces it, `$.a.b` sets a field (creating the objects on the way)."""
    if path is None:
        return data
    if path == "$":
        return result
    out = copy.deepcopy(data)
    node = out
    parts = path[2:].split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = result
    return out


TOKEN = re.compile(r"\s*(?:(?P<fn>States\.\w+)\(|(?P<str>'(?:\\.|[^'\\])*')|(?P<path>\$\$?[\w.]*)"
                   r"|(?P<num>-?\d+(?:\.\d+)?)|(?P<word>true|false|null)|(?P<punct>[,)]))")


def intrinsic(text: str, data: Any, context: Dict[str, Any]) -> Any:
    tokens = []
    pos = 0
    while pos < len(text.rstrip()):
        match = TOKEN.match(text, pos)
        assert match, f"cannot parse {text[pos:]!r} in {text!r}"
        tokens.append((match.lastgroup, match.group(match.lastgroup)))
        pos = match.end()
    tokens.reverse()

    def value() -> Any:
        kind, raw = tokens.pop()
        if kind == "str":
            return re.sub(r"\\(.)", r"\1", raw[1:-1])
        if kind == "num":
            return json.loads(raw)
        if kind == "word":
            return json.loads(raw)
        if kind == "path":
            return path_get(raw, data, context)
        assert kind == "fn", raw
        args = []
        while tokens[-1] != ("punct", ")"):
            args.append(value())
            if tokens[-1] == ("punct", ","):
                tokens.pop()
        tokens.pop()
        return FUNCTIONS[raw](*args)

    out = value()
    assert not tokens, f"trailing text in {text!r}"
    return out


def fmt(template: str, *args: Any) -> str:
    pieces = template.split("{}")
    if len(pieces) - 1 != len(args):
        raise StatesError("States.Runtime", f"States.Format({template!r}) got {len(args)} arguments")
    out = pieces[0]
    for arg, piece in zip(args, pieces[1:]):
        if isinstance(arg, (dict, list)):
            raise StatesError("States.Runtime", "States.Format takes no objects or arrays")
        out += (arg if isinstance(arg, str) else json.dumps(arg)) + piece
    return out


def json_merge(a: Any, b: Any, deep: bool) -> Dict[str, Any]:
    if not isinstance(a, dict) or not isinstance(b, dict) or deep is not False:
        raise StatesError("States.Runtime", "States.JsonMerge takes two objects (shallow merge here)")
    return {**a, **b}


def string_to_json(text: Any) -> Any:
    if not isinstance(text, str):
        raise StatesError("States.Runtime", "States.StringToJson takes a string")
    try:
        return json.loads(text)
    except ValueError:
        raise StatesError("States.Runtime", "States.StringToJson: not JSON") from None


FUNCTIONS = {"States.Format": fmt, "States.Array": lambda *args: list(args), "States.JsonMerge": json_merge,
             "States.StringToJson": string_to_json, "States.UUID": lambda: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"}


def parameters(template: Any, data: Any, context: Dict[str, Any]) -> Any:
    if isinstance(template, dict):
        out = {}
        for key, value in template.items():
            if key.endswith(".$"):
                out[key[:-2]] = (intrinsic(value, data, context) if value.startswith("States.")
                                 else path_get(value, data, context))
            else:
                out[key] = parameters(value, data, context)
        return out
    if isinstance(template, list):
        return [parameters(item, data, context) for item in template]
    return template


def choose(rule: Dict[str, Any], data: Any, context: Dict[str, Any]) -> bool:
    if "And" in rule:
        return all(choose(r, data, context) for r in rule["And"])
    if "Or" in rule:
        return any(choose(r, data, context) for r in rule["Or"])
    if "Not" in rule:
        return not choose(rule["Not"], data, context)
    try:
        value = path_get(rule["Variable"], data, context)
    except StatesError:
        value = MISSING
    if "IsPresent" in rule:
        return (value is not MISSING) == rule["IsPresent"]
    if value is MISSING:  # every other test of a missing field fails the execution
        raise StatesError("States.Runtime", f"the Choice's variable {rule['Variable']} is not in the input")
    tests = {
        "IsString": lambda: isinstance(value, str) == rule["IsString"],
        "IsNumeric": lambda: (isinstance(value, (int, float)) and not isinstance(value, bool)) == rule["IsNumeric"],
        "StringEquals": lambda: value == rule["StringEquals"],
        "StringMatches": lambda: re.fullmatch(".*".join(map(re.escape, rule["StringMatches"].split("*"))),
                                              value, re.S) is not None,
        "NumericEquals": lambda: value == rule["NumericEquals"],
        "NumericLessThan": lambda: value < rule["NumericLessThan"],
        "NumericGreaterThan": lambda: value > rule["NumericGreaterThan"],
        "BooleanEquals": lambda: value is rule["BooleanEquals"],
    }
    (test,) = [tests[k] for k in rule if k in tests]
    return test()


def matches(error: str, names: List[str]) -> bool:
    # States.ALL catches everything but States.Runtime (and a few data-limit errors).
    return error in names or ("States.ALL" in names and error != "States.Runtime")


@dataclass
class Outcome:
    status: str
    error: Optional[str] = None
    cause: str = ""
    output: Any = None
    visited: List[str] = field(default_factory=list)


def execute(machine: Dict[str, Any], payload: Any, tasks) -> Outcome:
    context = {"Execution": {"Name": EXECUTION, "Input": payload}}
    states, name, data = machine["States"], machine["StartAt"], payload
    visited: List[str] = []
    retries: Dict[tuple, int] = {}
    while True:
        visited.append(name)
        assert len(visited) < 200, visited
        state = states[name]
        kind = state["Type"]
        try:
            if kind == "Fail":
                cause = state.get("Cause", "")
                if "CausePath" in state:
                    path = state["CausePath"]
                    cause = intrinsic(path, data, context) if path.startswith("States.") else \
                        path_get(path, data, context)
                return Outcome("FAILED", state["Error"], cause, visited=visited)
            if kind == "Succeed":
                return Outcome("SUCCEEDED", output=data, visited=visited)
            if kind == "Choice":
                name = next((c["Next"] for c in state["Choices"] if choose(c, data, context)), None) \
                    or state.get("Default")
                if name is None:
                    raise StatesError("States.NoChoiceMatched", visited[-1])
                continue
            effective = path_get(state.get("InputPath", "$"), data, context)
            if kind == "Pass":
                result = parameters(state["Parameters"], effective, context) if "Parameters" in state \
                    else state.get("Result", effective)
            else:
                assert kind == "Task", kind
                params = parameters(state.get("Parameters", effective), effective, context)
                try:
                    result = tasks(state["Resource"], params, state)
                except StatesError as exc:
                    retry = next((r for r in state.get("Retry", []) if matches(exc.error, r["ErrorEquals"])), None)
                    key = (name, id(retry))
                    if retry is not None and retries.get(key, 0) < retry.get("MaxAttempts", 3):
                        retries[key] = retries.get(key, 0) + 1
                        visited.pop()
                        continue
                    catch = next((c for c in state.get("Catch", []) if matches(exc.error, c["ErrorEquals"])), None)
                    if catch is None:
                        raise
                    data = path_set(data, catch.get("ResultPath", "$"), {"Error": exc.error, "Cause": exc.cause})
                    name = catch["Next"]
                    continue
                if "ResultSelector" in state:
                    result = parameters(state["ResultSelector"], result, context)
            data = path_set(data, state.get("ResultPath", "$"), result)
            data = path_get(state.get("OutputPath", "$"), data, context)
        except StatesError as exc:  # not caught: the execution fails in this state
            return Outcome("FAILED", exc.error, exc.cause, visited=visited)
        if state.get("End"):
            return Outcome("SUCCEEDED", output=data, visited=visited)
        name = state["Next"]


class FakeEmr:
    """createCluster/addStep/terminateCluster: checks what a real call would refuse, runs each step's argv through
    the job's own parse_args, and fails the calls it is told to."""

    def __init__(self, fail_steps: Set[str] = frozenset(), fail_create: bool = False, terminate_failures: int = 0,
                 step_error: str = "States.TaskFailed", *, unreadable: bool = False, record_error: bool = True) -> None:
        self.fail_steps, self.fail_create, self.step_error = fail_steps, fail_create, step_error
        self.unreadable, self.reads, self.records, self.record_error = unreadable, [], {}, record_error
        self.terminate_failures = terminate_failures
        self.clusters: Dict[str, Dict[str, Any]] = {}
        self.steps: List[Dict[str, Any]] = []

    def __call__(self, resource: str, params: Dict[str, Any], state: Dict[str, Any]) -> Dict[str, Any]:
        if resource == GET_OBJECT:
            return self.get_object(params)
        if resource == CREATE:
            assert isinstance(params["AutoTerminationPolicy"]["IdleTimeout"], int)
            assert all(isinstance(g["InstanceCount"], int) for g in params["Instances"]["InstanceGroups"])
            assert params["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
            if self.fail_create:  # e.g. a bootstrap failure: EMR terminates the cluster itself
                raise StatesError("States.TaskFailed", "Terminated with errors: bootstrap action 1 failed")
            cluster = f"j-{len(self.clusters) + 1}"
            self.clusters[cluster] = {"state": "WAITING", "params": params}
            return {"ClusterId": cluster, "ClusterArn": f"arn:aws:elasticmapreduce:::cluster/{cluster}"}
        cluster = self.clusters[params["ClusterId"]]
        if resource == ADD_STEP:
            assert cluster["state"] == "WAITING"
            args = params["Step"]["HadoopJarStep"]["Args"]
            assert all(isinstance(a, str) for a in args), args  # EMR refuses anything but strings
            assert args[:7] == ["spark-submit", "--deploy-mode", "cluster", "--py-files", f"{ARTIFACTS}/ddbvault.zip",
                                "--jars", f"{ARTIFACTS}/ddbvault-jvm.jar"]
            assert args[7].startswith(f"{ARTIFACTS}/jobs/")
            script = os.path.join(ROOT, "jobs", args[7][len(ARTIFACTS) + len("/jobs/"):])
            job_args, metrics = cli.take_metrics_flag(args[8:])  # the runner's flag: every job publishes metrics
            assert metrics
            parsed = module(script).parse_args(job_args)
            self.steps.append({"state": state, "script": os.path.basename(script), "args": job_args,
                               "parsed": parsed})
            self.ran(os.path.basename(script), parsed)
            return {"Step": {"Status": {"State": "COMPLETED"}}}
        assert resource == TERMINATE, resource
        if self.terminate_failures:
            self.terminate_failures -= 1
            raise StatesError("EMR.AmazonEMRException", "Rate exceeded")
        cluster["state"] = "TERMINATED"
        return {}

    def get_object(self, params: Dict[str, Any]) -> Dict[str, Any]:
        """The run record the last step wrote (as the runner writes it), or NoSuchKey when told to fail."""
        self.reads.append((params["Bucket"], params["Key"]))
        if self.unreadable:
            raise StatesError("S3.NoSuchKeyException", "The specified key does not exist.")
        run_id = params["Key"].rsplit("/", 1)[-1][:-len(".json")]
        if run_id not in self.records:
            raise StatesError("S3.NoSuchKeyException", "The specified key does not exist.")
        return {"Body": json.dumps(self.records[run_id]), "ContentType": "application/json"}

    def ran(self, script: str, parsed: Any) -> None:
        """The job's run record, as the runner writes it (ok, or failed with its one-line error)."""
        failed = script in self.fail_steps
        self.records[parsed.run_id] = {"run_id": parsed.run_id, "status": "failed" if failed else "ok", "items": 3,
                                       **({"error": JOB_ERROR} if failed and self.record_error else {})}
        if failed:
            raise StatesError(self.step_error, "Step failed")

    def running(self) -> List[str]:
        return [c for c, v in self.clusters.items() if v["state"] != "TERMINATED"]


def run(kind: str, payload: Any, emr: Optional[FakeEmr] = None) -> tuple:
    emr = emr or FakeEmr()
    return execute(load(kind), payload, emr), emr


# -- every path ends with the cluster terminated or never created ------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_success_runs_every_step_with_the_execution_as_run_id_and_terminates(kind):
    outcome, emr = run(kind, INPUT)
    assert outcome.status == "SUCCEEDED", outcome
    assert len(emr.clusters) == 1 and emr.running() == []
    assert [s["script"] for s in emr.steps] == [script for _, script, _, _ in STEPS[kind]]
    for step, (_, _, run_id, budget) in zip(emr.steps, STEPS[kind]):
        parsed = step["parsed"]
        assert (parsed.table, parsed.region, parsed.vault, parsed.vault_region, parsed.run_id) == \
            ("orders", "eu-west-1", VAULT, "eu-west-2", run_id)
        if budget:  # absent from the input: the job's own percent default, said explicitly
            flag, value = DEFAULT_BUDGET[budget]
            assert step["args"][step["args"].index(flag) + 1] == value and GIVEN_BUDGET[budget] not in step["args"]
    params = next(iter(emr.clusters.values()))["params"]
    assert params["AutoTerminationPolicy"] == {"IdleTimeout": 3600}
    assert params["Tags"] == [{"Key": "ddbvault:execution", "Value": EXECUTION}]
    assert params["ServiceRole"] == "EMR_DefaultRole" and params["JobFlowRole"] == "EMR_EC2_DefaultRole"
    # The output carries each job's run record, read back from the vault after its step.
    assert emr.reads == [("vault-bucket", f"teams/orders/_ddbvault/runs/{run_id}.json")
                         for _, _, run_id, _ in STEPS[kind]]
    assert outcome.output == {
        "table": "orders", "vault": VAULT, "clusterId": "j-1",
        "runRecords": [f"{VAULT}/_ddbvault/runs/{run_id}.json" for _, _, run_id, _ in STEPS[kind]],
        "runs": [{"summary": {"run_id": run_id, "status": "ok", "items": 3}} for _, _, run_id, _ in STEPS[kind]]}


@pytest.mark.parametrize("kind", KINDS)
def test_an_unreadable_run_record_is_reported_and_the_run_still_succeeds(kind):
    outcome, emr = run(kind, {**INPUT, "serviceRole": "svc", "instanceProfile": "profile-export"},
                       FakeEmr(unreadable=True))
    assert outcome.status == "SUCCEEDED" and emr.running() == []
    assert outcome.output["runs"] == [{"Error": "S3.NoSuchKeyException", "Cause": "The specified key does not exist."}
                                      for _ in STEPS[kind]]
    assert len(emr.reads) == 4 * len(STEPS[kind])  # the first read and three retries, for each step
    params = emr.clusters["j-1"]["params"]
    assert (params["ServiceRole"], params["JobFlowRole"]) == ("svc", "profile-export")


@pytest.mark.parametrize("kind,failing", [(k, s[1]) for k in KINDS for s in STEPS[k]])
@pytest.mark.parametrize("error", ["States.TaskFailed", "States.Timeout"])
def test_a_failed_step_terminates_the_cluster_and_fails_the_execution(kind, failing, error):
    outcome, emr = run(kind, INPUT, FakeEmr(fail_steps={failing}, step_error=error))
    assert outcome.status == "FAILED" and outcome.error.startswith("ddbvault.") and outcome.error.endswith("Failed")
    assert len(emr.clusters) == 1 and emr.running() == []
    scripts = [s["script"] for s in emr.steps]
    assert scripts[-1] == failing and scripts.count(failing) == 1  # nothing runs after the failed step
    # The cluster is terminated, then the job's run record read back: its error ends the execution's Cause.
    state = STEPS[kind][[s[1] for s in STEPS[kind]].index(failing)][0]
    assert outcome.visited[-4:] == [f"TerminateAfter{state}Failed", f"Read{state}Failure", f"{state}FailureRecorded",
                                    f"{state}FailedWithJobError"]
    assert outcome.cause == load(kind)["States"][f"{state}Failed"]["Cause"] + " The job: " + JOB_ERROR


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("record", ["unreadable", "no error"])
def test_a_failed_step_without_a_readable_error_fails_with_the_general_cause(kind, record):
    failing = STEPS[kind][-1]
    emr = FakeEmr(fail_steps={failing[1]}, unreadable=record == "unreadable", record_error=False)
    outcome, emr = run(kind, INPUT, emr)
    assert (outcome.status, outcome.visited[-1], emr.running()) == ("FAILED", f"{failing[0]}Failed", [])
    assert outcome.cause == load(kind)["States"][f"{failing[0]}Failed"]["Cause"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("missing", REQUIRED)
def test_input_missing_a_required_field_fails_before_any_cluster(kind, missing):
    payload = {k: v for k, v in INPUT.items() if k != missing}
    outcome, emr = run(kind, payload)
    assert (outcome.status, outcome.error) == ("FAILED", "ddbvault.BadInput")
    assert f"'{missing}'" in outcome.cause and "No cluster was created" in outcome.cause
    assert emr.clusters == {}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", [{"table": 7}, {"vaultPrefix": None}, {"vaultPrefix": "orders/"},
                                 {"vaultPrefix": "/orders"}, {"vaultBucket": "s3://vault-bucket"},
                                 {"vaultBucket": "vault-bucket/orders"}, {"serviceRole": 5}, {"instanceProfile": []},
                                 {"artifacts": ARTIFACTS + "/"},
                                 {"artifacts": "dist/0.1.0"}, {"logUri": "/var/log"}, {"idleTimeoutSeconds": "600"},
                                 {"coreInstanceCount": "2"}, {"maxReadUnits": {"rcu": 5}},
                                 {"idleTimeoutSeconds": 30}, {"coreInstanceCount": 0}, {"lockWaitSeconds": -1},
                                 {"maxWriteUnits": [5]}, {"lockWaitSeconds": "x"}])
def test_input_of_the_wrong_type_fails_before_any_cluster(kind, bad):
    (name, value), = bad.items()
    used = name in INPUT or name in ("idleTimeoutSeconds", "coreInstanceCount", "serviceRole", "instanceProfile") \
        or any(budget == name for _, _, _, budget in STEPS[kind]) \
        or (name == "lockWaitSeconds" and kind in ("export", "merge"))
    outcome, emr = run(kind, {**INPUT, name: value})
    if not used:  # a field this machine does not read changes nothing
        assert outcome.status == "SUCCEEDED" and emr.running() == []
        return
    assert (outcome.status, outcome.error) == ("FAILED", "ddbvault.BadInput") and f"'{name}'" in outcome.cause
    assert emr.clusters == {}


@pytest.mark.parametrize("kind", KINDS)
def test_optional_fields_given_reach_the_cluster_and_the_steps_as_strings(kind):
    payload = {**INPUT, "idleTimeoutSeconds": 900, "coreInstanceCount": 4, "lockWaitSeconds": 30,
               "maxReadUnits": 250, "maxWriteUnits": "1500.5"}
    outcome, emr = run(kind, payload)
    assert outcome.status == "SUCCEEDED" and emr.running() == []
    params = emr.clusters["j-1"]["params"]
    assert params["AutoTerminationPolicy"] == {"IdleTimeout": 900}
    assert params["Instances"]["InstanceGroups"][1]["InstanceCount"] == 4
    for step, (_, _, _, budget) in zip(emr.steps, STEPS[kind]):
        if budget:
            flag = GIVEN_BUDGET[budget]
            assert step["args"][step["args"].index(flag) + 1] == str(payload[budget])
        if kind in ("export", "merge"):
            assert step["parsed"].lock_wait == 30.0


@pytest.mark.parametrize("kind", KINDS)
def test_termination_is_retried_and_a_cluster_that_will_not_start_needs_no_termination(kind):
    outcome, emr = run(kind, INPUT, FakeEmr(terminate_failures=3))
    assert outcome.status == "SUCCEEDED" and emr.running() == []
    outcome, emr = run(kind, INPUT, FakeEmr(fail_steps={STEPS[kind][0][1]}, terminate_failures=3))
    assert outcome.status == "FAILED" and emr.running() == []
    outcome, emr = run(kind, INPUT, FakeEmr(fail_create=True))
    assert (outcome.status, outcome.error, emr.clusters, emr.steps) == ("FAILED", "ddbvault.ClusterFailed", {}, [])
    # Termination failing for good: a named failure; the cluster's idle auto-termination is the backstop.
    outcome, emr = run(kind, INPUT, FakeEmr(terminate_failures=100))
    assert (outcome.status, outcome.error) == ("FAILED", "ddbvault.ClusterNotTerminated")
    assert emr.clusters["j-1"]["params"]["AutoTerminationPolicy"]["IdleTimeout"] > 0


@pytest.mark.parametrize("kind", KINDS)
def test_the_paths_above_visit_every_state_and_only_states_that_exist(kind):
    machine = load(kind)
    states = machine["States"]
    for state in states.values():
        targets = [state.get("Next"), state.get("Default")] + [c["Next"] for c in state.get("Choices", [])] \
            + [c["Next"] for c in state.get("Catch", [])]
        assert all(t in states for t in targets if t), state
        if state.get("Resource") in (CREATE, ADD_STEP):  # a cluster exists from here on: every error is caught
            assert state["Catch"][0]["ErrorEquals"] == ["States.ALL"]
        if state.get("Resource") == TERMINATE:
            assert state["Retry"] and state["Catch"][0]["Next"] == "TerminateFailed"
    steps = [s[1] for s in STEPS[kind]]
    runs = [FakeEmr(), FakeEmr(terminate_failures=100), FakeEmr(fail_create=True)] + \
        [FakeEmr(fail_steps={s}, unreadable=unreadable) for s in steps for unreadable in (False, True)]
    visited = set()
    for emr in runs:
        visited.update(run(kind, INPUT, emr)[0].visited)
    for payload in [{**INPUT, "maxReadUnits": 5, "maxWriteUnits": 5},
                    {**INPUT, "maxReadUnits": [], "maxWriteUnits": {}}]:
        visited.update(run(kind, payload)[0].visited)
    for missing in REQUIRED:
        visited.update(run(kind, {k: v for k, v in INPUT.items() if k != missing})[0].visited)
    for name in ("idleTimeoutSeconds", "coreInstanceCount", "lockWaitSeconds"):
        visited.update(run(kind, {**INPUT, name: "x"})[0].visited)
    for name in ("serviceRole", "instanceProfile"):
        visited.update(run(kind, {**INPUT, name: 1})[0].visited)
    assert visited == set(states)
    assert machine["TimeoutSeconds"] > sum(s.get("TimeoutSeconds", 0) for s in states.values())


def test_the_interpreter_keeps_the_rule_the_machines_guard_against():
    """What the old machines did: a path missing after the cluster exists is States.Runtime, not caught."""
    machine = {"StartAt": "Create", "States": {
        "Create": {"Type": "Task", "Resource": CREATE, "Next": "Step", "ResultSelector": {"ClusterId.$": "$.ClusterId"},
                   "ResultPath": "$.cluster", "Parameters": {"AutoTerminationPolicy": {"IdleTimeout": 60},
                                                             "Instances": {"KeepJobFlowAliveWhenNoSteps": True,
                                                                           "InstanceGroups": []}}},
        "Step": {"Type": "Task", "Resource": ADD_STEP, "End": True,
                 "Parameters": {"ClusterId.$": "$.cluster.ClusterId", "Step": {"HadoopJarStep": {
                     "Args.$": "States.Array('x', $.maxReadUnits)"}}},
                 "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Terminate"}]},
        "Terminate": {"Type": "Task", "Resource": TERMINATE, "Parameters": {"ClusterId.$": "$.cluster.ClusterId"},
                      "End": True}}}
    emr = FakeEmr()
    outcome = execute(machine, {}, emr)
    assert (outcome.status, outcome.error, emr.running()) == ("FAILED", "States.Runtime", ["j-1"])


# -- EMR Serverless ---------------------------------------------------------------------------------------------------

class FakeServerless(FakeEmr):
    """startJobRun.sync: checks the run's role, entry point, arguments (through the job's parse_args) and Spark
    settings; getObject as for clusters."""

    def __init__(self, fail_steps: Set[str] = frozenset(), unreadable: bool = False) -> None:
        super().__init__(fail_steps=fail_steps, unreadable=unreadable, step_error="States.TaskFailed")
        self.runs: List[Dict[str, Any]] = []

    def __call__(self, resource: str, params: Dict[str, Any], state: Dict[str, Any]) -> Dict[str, Any]:
        if resource == GET_OBJECT:
            return self.get_object(params)
        assert resource == START_JOB_RUN, resource
        driver = params["JobDriver"]["SparkSubmit"]
        args = driver["EntryPointArguments"]
        assert all(isinstance(a, str) for a in args), args
        assert driver["EntryPoint"].startswith(f"{ARTIFACTS}/jobs/")
        script = os.path.join(ROOT, "jobs", driver["EntryPoint"][len(ARTIFACTS) + len("/jobs/"):])
        job_args, metrics = cli.take_metrics_flag(args)
        assert metrics
        parsed = module(script).parse_args(job_args)
        assert isinstance(params["ExecutionTimeoutMinutes"], int) and params["ClientToken"]
        self.runs.append({"script": os.path.basename(script), "role": params["ExecutionRoleArn"], "parsed": parsed,
                          "submit": driver["SparkSubmitParameters"], "params": params})
        self.steps.append(self.runs[-1])
        self.ran(os.path.basename(script), parsed)
        return {"JobRunId": f"jr-{len(self.runs)}", "ApplicationId": params["ApplicationId"]}


def run_serverless(kind: str, payload: Any, fake: Optional[FakeServerless] = None) -> tuple:
    fake = fake or FakeServerless()
    return execute(load(f"{kind}-serverless"), payload, fake), fake


@pytest.mark.parametrize("kind", KINDS)
def test_serverless_runs_each_job_with_its_own_role_delta_from_the_image_and_the_package(kind):
    outcome, fake = run_serverless(kind, SERVERLESS_INPUT)
    assert outcome.status == "SUCCEEDED", outcome
    assert [(r["script"], r["role"]) for r in fake.runs] == [(script, ROLES[state]) for state, script, _, _ in
                                                             STEPS[kind]]
    with open(os.path.join(ROOT, "emr", "configurations.json"), encoding="utf-8") as handle:
        spark = next(c["Properties"] for c in json.load(handle) if c["Classification"] == "spark-defaults")
    for job, (_, _, run_id, _) in zip(fake.runs, STEPS[kind]):
        parsed = job["parsed"]
        assert (parsed.table, parsed.vault, parsed.vault_region, parsed.run_id) == \
            ("orders", VAULT, "eu-west-2", run_id)
        conf = dict(pair.split("=", 1) for pair in job["submit"].split("--conf ")[1:] for pair in [pair.strip()])
        assert conf["spark.submit.pyFiles"] == f"{ARTIFACTS}/ddbvault.zip"
        assert conf["spark.archives"] == f"{ARTIFACTS}/pydeps.tar.gz#pydeps"
        assert conf["spark.jars"] == ",".join([*(f"/usr/share/aws/delta/lib/{jar}"
                                                 for jar in ("delta-spark.jar", "delta-storage.jar")),
                                               f"{ARTIFACTS}/ddbvault-jvm.jar"])
        assert conf["spark.emr-serverless.driverEnv.PYTHONPATH"] == conf["spark.executorEnv.PYTHONPATH"] == "./pydeps"
        assert {k: v for k, v in spark.items() if not k.startswith("spark.yarn.")}.items() <= conf.items()
        assert job["params"]["ConfigurationOverrides"]["MonitoringConfiguration"]["S3MonitoringConfiguration"] == \
            {"LogUri": "s3://logs/emr/"}
    assert outcome.output == {
        "table": "orders", "vault": VAULT,
        "runRecords": [f"{VAULT}/_ddbvault/runs/{run_id}.json" for _, _, run_id, _ in STEPS[kind]],
        "runs": [{"summary": {"run_id": run_id, "status": "ok", "items": 3}} for _, _, run_id, _ in STEPS[kind]]}


@pytest.mark.parametrize("kind,failing", [(k, s[1]) for k in KINDS for s in STEPS[k]])
def test_serverless_a_failed_job_fails_the_execution_and_runs_nothing_after_it(kind, failing):
    outcome, fake = run_serverless(kind, SERVERLESS_INPUT, FakeServerless(fail_steps={failing}))
    assert outcome.status == "FAILED" and outcome.error.startswith("ddbvault.") and outcome.error.endswith("Failed")
    scripts = [r["script"] for r in fake.runs]
    assert scripts == [s[1] for s in STEPS[kind]][:scripts.index(failing) + 1] and scripts[-1] == failing
    assert len(fake.reads) == len(scripts)  # every job's record read back, the failed one's for its error
    state = STEPS[kind][len(scripts) - 1][0]
    assert outcome.visited[-1] == f"{state}FailedWithJobError" and outcome.cause.endswith(f" The job: {JOB_ERROR}")


@pytest.mark.parametrize("kind", KINDS)
def test_serverless_input_missing_a_field_runs_no_job(kind):
    needed = [k for k in SERVERLESS_INPUT if not k.endswith("RoleArn")] + \
        [f"{state.lower()}RoleArn" for state, _, _, _ in STEPS[kind]]
    for missing in needed:
        outcome, fake = run_serverless(kind, {k: v for k, v in SERVERLESS_INPUT.items() if k != missing})
        assert (outcome.status, outcome.error, fake.runs) == ("FAILED", "ddbvault.BadInput", []), missing
        assert f"'{missing}'" in outcome.cause
    unused = {f"{s.lower()}RoleArn" for s in ROLES} - set(needed)
    outcome, _ = run_serverless(kind, {k: v for k, v in SERVERLESS_INPUT.items() if k not in unused})
    assert outcome.status == "SUCCEEDED"


@pytest.mark.parametrize("kind", KINDS)
def test_serverless_paths_visit_every_state(kind):
    machine = load(f"{kind}-serverless")
    visited = set()
    fakes = [FakeServerless(), FakeServerless(unreadable=True)] + \
        [FakeServerless(fail_steps={s[1]}, unreadable=unreadable) for s in STEPS[kind] for unreadable in (False, True)]
    for fake in fakes:
        visited.update(run_serverless(kind, SERVERLESS_INPUT, fake)[0].visited)
    for payload in [{**SERVERLESS_INPUT, "maxReadUnits": 5, "maxWriteUnits": 5},
                    {**SERVERLESS_INPUT, "maxReadUnits": [], "maxWriteUnits": {}},
                    {**SERVERLESS_INPUT, "lockWaitSeconds": "x"}]:
        visited.update(run_serverless(kind, payload)[0].visited)
    for missing in SERVERLESS_INPUT:
        visited.update(run_serverless(kind, {k: v for k, v in SERVERLESS_INPUT.items() if k != missing})[0].visited)
    assert visited == set(machine["States"])


# -- one source of truth -------------------------------------------------------------------------------------------

def test_committed_json_is_what_the_build_script_writes():
    build = module(os.path.join(ROOT, "emr", "build_stepfunctions.py"))
    for rel, text in build.outputs().items():
        with open(os.path.join(ROOT, "emr", rel), encoding="utf-8") as handle:
            assert handle.read() == text, f"emr/{rel} is stale: run python3 emr/build_stepfunctions.py"
    assert sorted(f"{k}{v}.asl.json" for k in KINDS for v in ("", "-serverless")) == \
        sorted(os.listdir(os.path.join(ROOT, "emr", "stepfunctions")))
    done = subprocess.run([sys.executable, os.path.join(ROOT, "emr", "build_stepfunctions.py"), "--check"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def stack() -> Dict[str, Any]:
    with open(os.path.join(ROOT, "emr", "ddbvault.json"), encoding="utf-8") as handle:
        return json.load(handle)


def test_the_stack_is_what_its_build_script_writes_and_holds_the_committed_machines():
    done = subprocess.run([sys.executable, os.path.join(ROOT, "emr", "build_stack.py"), "--check"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    resources = stack()["Resources"]
    machines = {name: r["Properties"]["Definition"] for name, r in resources.items()
                if r["Type"] == "AWS::StepFunctions::StateMachine"}
    assert machines == {f"{k.capitalize()}{'Serverless' if v else 'Cluster'}Machine": load(f"{k}{'-serverless' * v}")
                        for k in KINDS for v in (False, True)}
    passed = resources["StatesRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    (pass_role,) = [st for st in passed if st["Action"] == ["iam:PassRole"]]
    assert pass_role["Resource"] == [{"Fn::GetAtt": [f"{n}Role", "Arn"]} for n in
                                     ("Export", "Merge", "Restore", "Verify", "Recover")] + \
        [{"Fn::GetAtt": ["EmrServiceRole", "Arn"]}]


PLACEHOLDERS = {"${TableName}": "orders", "${ReplicaName}": "orders", "${SourceRegion}": "eu-west-1",
                "${AWS::Region}": "eu-west-2", "${VaultBucket}": "vault-bucket", "${VaultPrefix}": "teams/orders",
                "${ArtifactsBucket}": "logs", "${SubnetId}": "subnet-1",
                "${EmrRelease}": "emr-7.12.0", "${EmrServiceRole}": "svc", "${ServerlessApplication}": "00app"}


@pytest.mark.parametrize("schedule,kind", [("ExportSchedule", "export"), ("MergeSchedule", "merge")])
@pytest.mark.parametrize("serverless", [True, False])
def test_each_schedule_starts_its_machine_with_an_input_it_accepts(schedule, kind, serverless):
    target = stack()["Resources"][schedule]["Properties"]["Target"]
    assert target["Arn"]["Fn::If"][1 if serverless else 2] == {
        "Ref": f"{kind.capitalize()}{'Serverless' if serverless else 'Cluster'}Machine"}
    text = target["Input"]["Fn::If"][1 if serverless else 2]["Fn::Sub"]
    assert text.count("s3://${ArtifactsBucket}/artifacts/${ArtifactsVersion}") == 1
    text = text.replace("s3://${ArtifactsBucket}/artifacts/${ArtifactsVersion}", ARTIFACTS)
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    text = re.sub(r"\$\{(\w+)Role\.Arn\}", r"arn:aws:iam::1:role/\1", text)
    text = re.sub(r"\$\{(\w+)InstanceProfile\}", r"profile-\1", text)
    assert "${" not in text, text
    payload = json.loads(text)
    if serverless:
        outcome, fake = run_serverless(kind, payload)
        assert [r["role"] for r in fake.runs] == [f"arn:aws:iam::1:role/{kind.capitalize()}"]
    else:
        outcome, fake = run(kind, payload)
        assert fake.clusters["j-1"]["params"]["JobFlowRole"] == f"profile-{kind.capitalize()}"
    assert outcome.status == "SUCCEEDED", outcome
    assert fake.steps[0]["parsed"].vault == VAULT and fake.steps[0]["parsed"].table == "orders"


@pytest.mark.parametrize("kind", KINDS)
def test_every_cluster_gets_the_spark_settings_of_configurations_json(kind):
    with open(os.path.join(ROOT, "emr", "configurations.json"), encoding="utf-8") as handle:
        configurations = json.load(handle)
    assert load(kind)["States"]["CreateCluster"]["Parameters"]["Configurations"] == configurations
    spark = next(c["Properties"] for c in configurations if c["Classification"] == "spark-defaults")
    assert spark["spark.yarn.maxAppAttempts"] == "1" and spark["spark.speculation"] == "false"
    assert all(isinstance(v, str) for c in configurations for v in c["Properties"].values())


# -- --run-id ------------------------------------------------------------------------------------------------------

def run_id_parser(argv):
    parser = cli.parser("probe", "probe")
    cli.add_run_id(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize("argv,expected", [(["--run-id", EXECUTION], EXECUTION), (["--run-id", "a" * 100], "a" * 100),
                                           ([], None)])
def test_the_run_id_given_names_the_run(capsys, argv, expected):
    seen = []
    assert run_job("probe", argv, run_id_parser, lambda args, run: seen.append(run.run_id)) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["run_id"] == seen[0]
    if expected:
        assert seen == [expected]
    else:
        assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", seen[0])


@pytest.mark.parametrize("bad", ["", "a b", "x/y", "..", "a" * 101, "run:1", "ü"])
def test_a_run_id_that_cannot_name_a_file_is_refused(capsys, bad):
    assert run_job("probe", ["--run-id", bad], run_id_parser, lambda args, run: None) == 2
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "failed" and "is not a run id" in summary["error"]
    with pytest.raises(argparse.ArgumentTypeError):
        cli.run_id(bad)


# -- the package ---------------------------------------------------------------------------------------------------

def test_make_package_ships_the_library_for_py_files_and_the_jvm_codec_for_jars(tmp_path):
    dist = tmp_path / "dist"
    make = ["make", "-s", "-C", ROOT, "package", f"DIST={dist}", "VERSION=9.9.9-test"]  # the PATH's python3
    planned = subprocess.run([*make, "-n"], capture_output=True, text=True, check=True).stdout
    assert "pip" not in planned and "-m venv" not in planned and "mvn" not in planned  # not `setup` again
    subprocess.run(make, capture_output=True, text=True, check=True)
    built = dist / "9.9.9-test"
    assert sorted(p.relative_to(built).as_posix() for p in built.rglob("*") if p.is_file()) == sorted(
        ["bootstrap.sh", "ddbvault.zip", "ddbvault-jvm.jar", "lambda.zip", "pydeps.tar.gz"]
        + [f"jobs/{name}" for name in os.listdir(os.path.join(ROOT, "jobs")) if name.endswith(".py")])
    out = built / "ddbvault.zip"
    with zipfile.ZipFile(out) as archive:
        assert not [n for n in archive.namelist() if "__pycache__" in n or not n.startswith("ddbvault/")]
    with zipfile.ZipFile(built / "ddbvault-jvm.jar") as archive:
        assert {"ddbvault/jvm/PageRows.class", "ddbvault/jvm/Canonical.class"} <= set(archive.namelist())
    # The zip first on the path, as --py-files puts it on executors: ddbvault must come from it.
    code = (f"import sys; sys.path.insert(0, {str(out)!r}); "
            "import ddbvault.export, ddbvault.restore, ddbvault.verify, ddbvault.merge; "
            "print(ddbvault.export.__file__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=str(tmp_path))
    assert result.stdout.strip() == str(out / "ddbvault" / "export.py")
    # The change-source Lambda's package: the same library, its handler at ddbvault.changes.lambda_sink.handler.
    assert (built / "lambda.zip").read_bytes() == out.read_bytes()
    # EMR Serverless's dependencies, unpacked as spark.archives does, first on the path: the bootstrap's boto3.
    deps = tmp_path / "pydeps"
    with tarfile.open(built / "pydeps.tar.gz") as archive:
        names = archive.getnames()
        archive.extractall(deps)
    assert {n.split("/")[0] for n in names} == {"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six.py",
                                                "urllib3"}
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    code = ("import boto3, botocore, botocore.session; print(boto3.__version__, botocore.__version__, "
            "boto3.__file__.startswith(sys.argv[1]), "
            "'IfNoneMatch' in botocore.session.get_session().get_service_model('s3')"
            ".operation_model('PutObject').input_shape.members)")
    result = subprocess.run([sys.executable, "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); " + code,
                             str(deps)], capture_output=True, text=True, check=True, cwd=str(tmp_path))
    assert result.stdout.split() == [importlib.metadata.version("boto3"), importlib.metadata.version("botocore"),
                                     "True", "True"]


def test_the_bootstrap_installs_the_boto3_the_tests_ran_with():
    with open(os.path.join(ROOT, "emr", "bootstrap.sh"), encoding="utf-8") as handle:
        pins = dict(re.findall(r'"(boto3|botocore)==([^"]+)"', handle.read()))
    assert pins == {name: importlib.metadata.version(name) for name in ("boto3", "botocore")}, \
        "emr/bootstrap.sh must pin the boto3 and botocore this venv tests with"
