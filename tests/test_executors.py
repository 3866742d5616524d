"""Sweeps through executors: failure isolation, worker processes, resume after SIGKILL, shards, sweep files,
status, and real engines (a running Slurm through submitit; a local Ray instance).

Cells are small (synthetic or embedded data, random weights, 64 px) and share a feature cache per test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import record_files, run_cli
from filelock import FileLock
from slurm_env import requires_slurm

from rsabench import plugins as plugins_module
from rsabench.executor import LocalExecutor
from rsabench.hookspecs import hookimpl
from rsabench.jobs import CellJob, Outcome
from rsabench.objective import Objective
from rsabench.plugins import build_plugins
from rsabench.sweep import select_shard

FAST = ["--weights", "random", "--image-size", "64", "--epochs", "1"]
SYNTHETIC_FROZEN = ["run", "--dataset", "synthetic", "--objective", "frozen", *FAST]


def scores_of(runs: Path) -> dict[str, list]:
    """cell → every score of its record (the numbers a rerun must reproduce exactly)."""
    out = {}
    for path in record_files(runs):
        doc = json.loads(path.read_text())
        out[doc["cell"]] = [doc["selection"], doc["scores"]]
    return out


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``rsabench ARGS`` in a new process."""
    return subprocess.run(
        [sys.executable, "-m", "rsabench", *args], capture_output=True, text=True, timeout=timeout, cwd="/"
    )


# -- failure isolation ---------------------------------------------------------------------------
class Boom(Objective):
    """An objective whose training raises (a plugin bug)."""

    name = "boom"

    def loss(self, features, target):
        raise RuntimeError("boom: this objective always fails")


class BoomPlugin:
    @hookimpl
    def register_objectives(self, register):
        register("boom", Boom, summary="always fails")


@pytest.fixture
def with_boom(monkeypatch):
    built = build_plugins(extra={"boom-plugin": BoomPlugin()})
    monkeypatch.setattr(plugins_module, "get_plugins", lambda: built)


def test_a_failing_cell_is_recorded_and_the_sweep_goes_on(with_boom, capsys, tmp_path):
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    argv = [
        "run",
        *FAST,
        "--objective",
        "boom",
        "--objective",
        "frozen",
        "--runs-dir",
        str(runs),
        "--cache-dir",
        str(cache),
    ]
    code, out, err = run_cli(capsys, argv)
    assert code == 1, err
    assert "RuntimeError: boom: this objective always fails" in err.strip().splitlines()[-1]
    [record] = record_files(runs)
    assert json.loads(record.read_text())["config"]["objective"] == "frozen"  # the other cell finished
    [failure_file] = runs.rglob("*.failed.json")
    failure = json.loads(failure_file.read_text())
    assert failure["schema"] == "rsabench.failure/1" and failure["config"]["objective"] == "boom"
    assert failure["error"]["type"] == "RuntimeError" and "always fails" in failure["error"]["message"]
    assert failure["host"] and failure["traceback_file"]
    trace = (failure_file.parent / failure["traceback_file"]).read_text()
    assert "Traceback (most recent call last)" in trace and "raise RuntimeError" in trace
    assert "failed cells (1)" in out and "boom" in out  # the summary table lists the failure

    code, out, _ = run_cli(capsys, ["status", "--runs-dir", str(runs)])
    assert code == 0 and "2 cell(s): 1 done, 1 failed, 0 running, 0 pending" in out
    code, out, _ = run_cli(capsys, ["leaderboard", "--runs-dir", str(runs)])
    assert code == 0 and "failed cells (1)" in out

    mtime = record.stat().st_mtime_ns
    code, _, err = run_cli(capsys, argv)  # a rerun retries the failed cell only
    assert code == 1 and "2 cell(s), 1 cached, 1 to run" in err
    assert record.stat().st_mtime_ns == mtime


def test_fail_fast_stops_at_the_first_failure(with_boom, capsys, tmp_path):
    runs = tmp_path / "runs"
    argv = ["run", *FAST, "--objective", "boom", "--objective", "frozen", "--runs-dir", str(runs), "--fail-fast"]
    code, _, err = run_cli(capsys, [*argv, "--cache-dir", str(tmp_path / "cache")])
    assert code == 1 and "1 not run (--fail-fast)" in err
    assert not record_files(runs)


def test_a_failure_that_goes_away_leaves_no_failure_record(capsys, tmp_path):
    runs = tmp_path / "runs"
    base = ["run", *FAST, "--objective", "dissim", "--runs-dir", str(runs), "--cache-dir", str(tmp_path / "c")]
    code, _, _ = run_cli(capsys, [*base, "--lr", "1e30"])  # diverges
    assert code == 1 and list(runs.rglob("*.failed.json"))
    code, _, err = run_cli(capsys, base)  # another cell (another lr): the earlier failure stays its own
    assert code == 0, err
    assert len(list(runs.rglob("*.failed.json"))) == 1 and len(record_files(runs)) == 1


# -- worker processes ----------------------------------------------------------------------------
def test_jobs_2_gives_the_numbers_of_jobs_1_and_isolates_failures(tmp_path):
    cache = str(tmp_path / "cache")
    args = ["--dataset", "synthetic", "--objective", "frozen", "--objective", "dissim", *FAST, "--cache-dir", cache]
    one = cli("run", *args, "--runs-dir", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    two = cli("run", *args, "--runs-dir", str(tmp_path / "two"), "--jobs", "2")
    assert two.returncode == 0, two.stderr
    assert "4 to run on local (2 at once)" in two.stderr
    assert scores_of(tmp_path / "one") == scores_of(tmp_path / "two") and len(scores_of(tmp_path / "two")) == 4
    bad = cli("run", *args, "--runs-dir", str(tmp_path / "bad"), "--jobs", "2", "--lr", "1e30")  # dissim diverges
    assert bad.returncode == 1
    assert "2 of 4 cells failed" in bad.stderr.strip().splitlines()[-1] and "training diverged" in bad.stderr
    kept = [json.loads(p.read_text())["config"]["objective"] for p in record_files(tmp_path / "bad")]
    assert kept == ["frozen", "frozen"] and len(list((tmp_path / "bad").rglob("*.failed.json"))) == 2


def die_on_bad(job: dict) -> Outcome:
    """A worker's job stand-in: the cell named "bad" kills its worker process; the others succeed."""
    if job["cell"] == "bad":
        os._exit(9)
    time.sleep(0.2)
    return Outcome(job["cell"], "done", job["path"], 0.2)


def test_a_worker_that_dies_fails_its_own_cell_only(tmp_path):
    class Dying(LocalExecutor):
        run_one = staticmethod(die_on_bad)

    cells = ["ok1", "bad", "ok2", "ok3", "ok4"]
    jobs = [CellJob({"dataset": "d"}, c, str(tmp_path / f"{c}.json"), {"device": "cpu"}) for c in cells]
    seen: dict[str, str] = {}
    Dying(jobs=2).run(jobs, lambda job, outcome: seen.update({job.cell: outcome.status}) or True)
    assert seen == {"ok1": "done", "ok2": "done", "ok3": "done", "ok4": "done", "bad": "failed"}
    failure = json.loads((tmp_path / "bad.failed.json").read_text())
    assert failure["error"]["kind"] == "lost worker" and "out-of-memory killer" in failure["error"]["message"]
    assert not (tmp_path / "ok1.failed.json").exists()


def test_a_sweep_killed_with_sigkill_resumes_without_recomputing(tmp_path):
    """12 cells, --jobs 2; SIGKILL the driver after its third record; the rerun ends with the 12 records,
    runs none of the finished cells again, and the numbers equal an uninterrupted run's."""
    cache = str(tmp_path / "cache")
    seeds = [arg for s in range(6) for arg in ("--seed", str(s))]
    args = [*SYNTHETIC_FROZEN[1:], *seeds, "--cache-dir", cache]
    runs = tmp_path / "runs"
    driver = subprocess.Popen(
        [sys.executable, "-m", "rsabench", "run", *args, "--runs-dir", str(runs), "--jobs", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while len(record_files(runs)) < 3 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait(timeout=60)
    before = {p: p.stat().st_mtime_ns for p in record_files(runs)}
    assert 3 <= len(before) < 12
    rerun = cli("run", *args, "--runs-dir", str(runs), "--jobs", "2")
    assert rerun.returncode == 0, rerun.stderr
    cached = int(re.search(r"12 cell\(s\), (\d+) cached", rerun.stderr).group(1))
    print(f"killed after {len(before)} records; the rerun: {rerun.stderr.splitlines()[0]}")
    assert cached >= len(before)
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # not one finished cell rewritten
    assert len(record_files(runs)) == 12
    reference = cli("run", *args, "--runs-dir", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr
    assert scores_of(runs) == scores_of(tmp_path / "reference")


# -- shards, sweep files, status -------------------------------------------------------------------
def test_shards_partition_the_cells_whatever_the_order():
    class Cell:
        def __init__(self, cell):
            self.cell = cell

    cells = [Cell(f"{k:02x}" * 32) for k in range(10)]
    shards = [select_shard(cells, (i, 3)) for i in (1, 2, 3)]
    assert sorted(c.cell for s in shards for c in s) == sorted(c.cell for c in cells)
    assert [len(s) for s in shards] == [4, 3, 3]
    assert [c.cell for c in select_shard(cells[::-1], (2, 3))] == [c.cell for c in shards[1]][::-1]


def plan_cells(capsys, *args: str) -> list[str]:
    code, out, err = run_cli(capsys, ["plan", *args, "--format", "json"])
    assert code == 0, err
    return [c["cell"] for c in json.loads(out)]


def test_shard_option_selects_the_same_cells_in_plan(capsys, tmp_path):
    args = ["--dataset", "synthetic", "--objective", "frozen", "--seed", "0", "--seed", "1", "--seed", "2", *FAST]
    args += ["--runs-dir", str(tmp_path / "r")]
    every = plan_cells(capsys, *args)
    parts = [plan_cells(capsys, *args, "--shard", f"{i}/4") for i in (1, 2, 3, 4)]
    assert sorted(c for p in parts for c in p) == sorted(every) and len(every) == 6
    code, _, err = run_cli(capsys, ["plan", *args, "--shard", "5/4"])
    assert code == 2 and "--shard 5/4: expected i/n with 1 <= i <= n" in err


def test_a_sweep_file_plans_the_cells_of_the_command_line(capsys, tmp_path):
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        'dataset = "synthetic"\nobjective = ["frozen", "dissim"]\nseed = [0, 1]\nweights = "random"\n'
        'image-size = [64, 80]\nepochs = 1\nlr = 0.001\nobjective-option = { normalization = "zscore" }\n'
        '[executor]\nname = "local"\nthreads = 1\n'
    )
    runs = ["--runs-dir", str(tmp_path / "r")]
    from_file = plan_cells(capsys, "--config", str(sweep), *runs)
    by_hand = []
    for size in ("64", "80"):
        by_hand += plan_cells(
            capsys, "--dataset", "synthetic", "--objective", "frozen", "--objective", "dissim", "--seed", "0",
            "--seed", "1", "--weights", "random", "--image-size", size, "--epochs", "1", "--lr", "0.001",
            "--objective-option", "normalization=zscore", *runs,
        )  # fmt: skip
    assert sorted(from_file) == sorted(by_hand) and len(from_file) == 2 * 2 * 2 * 2  # targets x obj x seed x size
    overridden = plan_cells(capsys, "--config", str(sweep), *runs, "--image-size", "64", "--seed", "1")
    assert len(overridden) == 4 and set(overridden) <= set(from_file)  # the command line wins


def test_sweep_file_mistakes_are_usage_errors(capsys, tmp_path):
    cases = {
        "imagesize = 64\n": "unknown key 'imagesize'; did you mean 'image_size'",
        "epochs = 'many'\n": "epochs = 'many'",
        "runs-dir = ['a', 'b']\n": "runs-dir: one value only",
        "dataset = [\n": "not valid TOML",
        "executor = 3\n": "[executor] must be a table",
        "[executor]\nname = 'local'\nwhat = 1\n": "--executor-option what: not an option of executor 'local'",
    }
    for text, fragment in cases.items():
        sweep = tmp_path / "s.toml"
        sweep.write_text(text)
        code, _, err = run_cli(capsys, ["plan", "--config", str(sweep), "--runs-dir", str(tmp_path / "r")])
        assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, (text, err)


def test_status_tells_done_failed_running_and_pending(capsys, tmp_path, with_boom):
    runs = tmp_path / "runs"
    argv = ["run", *FAST, "--objective", "boom", "--objective", "frozen", "--runs-dir", str(runs)]
    run_cli(capsys, [*argv, "--cache-dir", str(tmp_path / "cache")])
    manifest = next((runs / "sweeps").glob("*.json"))
    doc = json.loads(manifest.read_text())
    for name, seed in (("running", 7), ("pending", 8)):  # two more cells: one locked by a live process, one untouched
        entry = dict(doc["cells"][0], cell=name * 8, seed=seed, record=f"kriegeskorte2008/{name}.json")
        doc["cells"].append(entry)
    manifest.write_text(json.dumps(doc))
    lock = FileLock(str(runs / "kriegeskorte2008" / ".running.json.lock"))
    probe = subprocess.Popen(
        [sys.executable, "-c", f"from filelock import FileLock; l = FileLock({str(lock.lock_file)!r}); l.acquire();"
         "import time; print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert probe.stdout.readline().strip() == "held"
        code, out, _ = run_cli(capsys, ["status", "--runs-dir", str(runs)])
    finally:
        probe.kill()
    assert code == 0 and "4 cell(s): 1 done, 1 failed, 1 running, 1 pending" in out
    assert "RuntimeError: boom" in out


def test_executor_options_are_checked(capsys, tmp_path):
    base = ["plan", "--runs-dir", str(tmp_path / "r")]
    code, _, err = run_cli(capsys, [*base, "--executor-option", "threads=many"])
    assert code == 2 and "--executor-option threads=many: executor 'local' expects int" in err
    code, _, err = run_cli(capsys, [*base, "--executor", "slurm", "--executor-option", "gpu=1"])
    assert code == 2 and "--executor-option gpu: not an option of executor 'slurm'" in err and "gpus" in err


# -- real engines ----------------------------------------------------------------------------------
@requires_slurm
def test_a_sweep_runs_on_slurm(tmp_path):
    runs = tmp_path / "runs"
    done = cli(
        *SYNTHETIC_FROZEN, "--seed", "0", "--seed", "1", "--runs-dir", str(runs), "--cache-dir", str(tmp_path / "c"),
        "--executor", "slurm", "--executor-option", "cpus=1", "--executor-option", "time=10",
        "--executor-option", "poll=1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(record_files(runs)) == 4
    logs = sorted((runs / "logs" / "slurm").glob("*/*_log.out"))
    assert len(logs) == 4 and len(sorted((runs / "logs" / "slurm").glob("*/*_log.err"))) == 4
    [submission] = (runs / "logs" / "slurm").glob("submitted-*.json")
    assert len(json.loads(submission.read_text())["tasks"]) == 4


def test_a_sweep_runs_on_a_local_ray_instance(tmp_path):
    pytest.importorskip("ray")
    runs = tmp_path / "runs"
    done = cli(
        *SYNTHETIC_FROZEN, "--seed", "0", "--seed", "1", "--runs-dir", str(runs), "--cache-dir", str(tmp_path / "c"),
        "--executor", "ray", "--executor-option", "local_cpus=2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(record_files(runs)) == 4


SLOW = pytest.mark.skipif(
    os.environ.get("RSABENCH_SLOW_TESTS") != "1",
    reason="slow (about 2 minutes: a cell trained on Slurm, preempted, requeued, and trained again locally); "
    ".ci/run sets RSABENCH_SLOW_TESTS=1",
)


def _wait(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@SLOW
@requires_slurm
def test_a_preempted_slurm_cell_is_requeued_and_resumes_from_its_checkpoint(tmp_path):
    """Slurm's preemption warning (SIGUSR2, as before a time limit) reaches a training cell: submitit requeues the
    task, and the cell resumes from its last per-epoch checkpoint to the numbers of an uninterrupted run."""
    args = ["run", "--objective", "dissim", *FAST[:4], "--epochs", "30", "--patience", "0"]
    args += ["--cache-dir", str(tmp_path / "c")]
    runs = tmp_path / "slurm"
    driver = subprocess.Popen(
        [sys.executable, "-m", "rsabench", *args, "--runs-dir", str(runs), "--executor", "slurm",
         "--executor-option", "cpus=2", "--executor-option", "poll=1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait(lambda: list(runs.rglob("state.pt")), 300, "the first checkpoint")
        [submission] = (runs / "logs" / "slurm").glob("submitted-*.json")
        job = json.loads(submission.read_text())["tasks"][0]["job_id"]
        subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)

        def requeued() -> bool:
            state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True)
            return state.stdout.strip() == "PENDING"

        _wait(requeued, 120, "the task to be requeued")
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True, timeout=30)  # no 2-min hold
        _, err = driver.communicate(timeout=600)
    finally:
        driver.kill()
    assert driver.returncode == 0, err
    [record] = record_files(runs)
    assert json.loads(record.read_text())["curves"]["training"]["resumed_from_epoch"] is not None
    logs = "".join(p.read_text() for p in (runs / "logs" / "slurm").glob("*/*_log.err"))
    assert "this job is preempted" in logs and "resumed from the checkpoint of epoch" in logs
    local = cli(*args, "--runs-dir", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr
    assert scores_of(runs) == scores_of(tmp_path / "local")


def test_a_job_file_is_checked_before_it_runs(tmp_path):
    from rsabench.jobs import main

    assert main([]) == 2
    bad = tmp_path / "job.json"
    for text in ("not json", "[]", json.dumps({"config": {}, "cell": "x", "path": "p", "runtime": {}})):
        bad.write_text(text)
        assert main([str(bad)]) == 2
    assert not list(tmp_path.rglob("*.failed.json"))
