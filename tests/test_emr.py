"""The deployment artefacts are real: the state machines run the jobs with flags the jobs accept, always
terminate their cluster, and the package `--py-files` ships imports on its own."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MACHINES = ("export.asl.json", "restore.asl.json")
ALLOWED = {
    "arn:aws:states:::elasticmapreduce:createCluster.sync",
    "arn:aws:states:::elasticmapreduce:addStep.sync",
    "arn:aws:states:::elasticmapreduce:terminateCluster.sync",
}


def load(name):
    with open(os.path.join(ROOT, "emr", "stepfunctions", name)) as handle:
        return json.load(handle)


def job_module(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def spark_submit_args(template):
    """The States.Array(...) template as a list: literals as they are, JSONPath references as 'X'."""
    inner = template[len("States.Array("):-1]
    tokens = re.findall(r"States\.Format\('\{\}/([^']+)', \$\.\w+\)|'([^']*)'|(\$\.\w+)", inner)
    return [fmt or literal or "1" for fmt, literal, _ in tokens]


@pytest.mark.parametrize("name", MACHINES)
def test_state_machine_runs_real_jobs_with_accepted_flags_and_always_terminates(name):
    machine = load(name)
    states = machine["States"]
    assert machine["StartAt"] == "CreateCluster"
    steps = [s for s in states.values() if s.get("Resource", "").endswith("addStep.sync")]
    assert steps
    for state in states.values():
        if state["Type"] == "Task":
            assert state["Resource"] in ALLOWED
    for step in steps:
        assert step["Catch"][0]["Next"] == "TerminateAfterFailure"
        args = spark_submit_args(step["Parameters"]["Step"]["HadoopJarStep"]["Args.$"])
        assert args[:5] == ["spark-submit", "--deploy-mode", "cluster", "--py-files", "ddbvault.zip"]
        script = os.path.join(ROOT, args[5])
        assert os.path.isfile(script), script
        parsed = job_module(script).parse_args(args[6:])
        assert parsed.table == "1" and parsed.vault == "1" and parsed.vault_region == "1"
    assert states["TerminateAfterFailure"]["Next"] == "Failed"
    assert states["CreateCluster"]["Parameters"]["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    reachable, todo = set(), ["CreateCluster"]
    while todo:
        current = todo.pop()
        if current in reachable:
            continue
        reachable.add(current)
        state = states[current]
        todo.extend([state[k] for k in ("Next",) if k in state] + [c["Next"] for c in state.get("Catch", [])])
    assert reachable == set(states)


def test_package_ships_the_library_for_py_files(tmp_path):
    out = tmp_path / "ddbvault.zip"
    subprocess.run([sys.executable, "-m", "zipfile", "-c", str(out), "ddbvault"], check=True,
                   cwd=os.path.join(ROOT, "lib"))
    # The zip first on the path, as --py-files puts it on executors: ddbvault must come from it.
    code = (f"import sys; sys.path.insert(0, {str(out)!r}); "
            "import ddbvault.export, ddbvault.restore, ddbvault.verify; print(ddbvault.export.__file__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=str(tmp_path))
    assert result.stdout.strip() == str(out / "ddbvault" / "export.py")
