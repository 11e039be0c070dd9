"""Sealed tasks against hostile adapters: nothing of a task outlives it, no test label is reached.

Every test runs real bubblewrap sandboxes, real memory cgroups and real processes, killed for
real. Tests that need the sandbox fail when it is missing (CI installs bubblewrap); the ones that
need a memory cgroup skip where this machine gives none.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import misbehaving
import numpy as np
import pytest
from helpers import TinyData
from test_resume import harness, kill_harness, start_run, wait_for
from test_runner import all_status, assert_tree_gone, run, task_rows

from decathlon import cgroups, enforcement, leaderboard, sandbox
from decathlon.hookspecs import hookimpl
from decathlon.leaderboard import COLUMNS
from decathlon.plugins import make_registry
from decathlon.runner import RunConfig, Runner

TASK = Path("tasks") / "breastmnist" / "seed0"


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DECATHLON_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module", autouse=True)
def _needs_bwrap() -> None:
    problem = sandbox.bwrap_problem()
    if problem:
        pytest.fail(f"these tests need the sandbox: {problem}")


def sealed(rows: list[dict[str, str]]) -> set[str]:
    return {r["sealed"] for r in rows}


def gone_within(pids: list[str], limit: float = 30.0) -> list[str]:
    """The recorded processes still alive after up to ``limit`` seconds (the kernel tears a PID
    namespace down asynchronously; this waits for it, it does not time it)."""
    deadline = time.monotonic() + limit
    while misbehaving.live_pids(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return misbehaving.live_pids(pids)


# ---------------------------------------------------------------------------- containment


@pytest.mark.parametrize("mode", ["setsid_env", "daemon", "ignore"])
def test_hostile_descendants_end_with_the_task(
    tiny_catalog: TinyData, tmp_path: Path, mode: str
) -> None:
    """`setsid env -i sleep` (new session, emptied environment: no tag to find), a classic
    double-forked daemon that ignores SIGTERM, a child that ignores SIGTERM: each ends with the
    task at its hard limit."""
    rows = run("mis_spawner", tiny_catalog, tmp_path / "run", options={"mode": mode})
    split_rows = task_rows(rows, "breastmnist")
    all_status(split_rows, "timeout")
    assert sealed(rows) == {"true"}
    task_dir = tmp_path / "run" / TASK
    assert len(misbehaving.recorded_pids(task_dir)) >= 3, "the grandchild never started"
    assert_tree_gone(task_dir)


@pytest.mark.parametrize("mode", ["setsid_env", "daemon"])
def test_nothing_of_the_task_survives_a_harness_killed_with_sigkill(
    tiny_catalog: TinyData, tmp_path: Path, mode: str
) -> None:
    """`kill -9` of the harness mid-task: the sandbox dies with its parent, and the kernel ends
    every process of the task's namespace, the worker, the daemon and the emptied grandchild."""
    proc = start_run(
        tmp_path,
        tiny_catalog,
        "mis_spawner",
        "--option",
        f"mode={mode}",
        flags=("breastmnist",),
        seeds=(0,),
    )
    task_dir = tmp_path / "run" / TASK
    try:
        wait_for(
            lambda: len(misbehaving.recorded_pids(task_dir)) >= 3, "the grandchild", proc, tmp_path
        )
        pids = misbehaving.recorded_pids(task_dir)
        assert len(misbehaving.live_pids(pids)) >= 2  # alive before the harness dies
        kill_harness(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert json.loads((task_dir / "task.json").read_text())["sealed"] is True
    assert gone_within(pids) == []
    assert misbehaving.tagged_processes(misbehaving.task_tag(task_dir)) == []


def test_what_an_unsealed_task_left_after_a_kill_9_ends_at_the_next_run(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    """Unsealed (``--sandbox off``), nothing ends with the harness: a daemon that left the
    task's session, group and environment survives a ``kill -9`` of it. Its cgroup, named by the
    harness that made it, does not: the next run on this machine kills what is in it."""
    if cgroups.cgroup_problem() and cgroups.pids_problem():
        pytest.skip(f"no cgroup here: {cgroups.cgroup_problem()}")
    proc = start_run(
        tmp_path,
        tiny_catalog,
        "mis_spawner",
        "--option",
        "mode=vanish",
        "--sandbox",
        "off",
        "--scale-factor",
        "20",  # a hard limit of a minute, not 3 s: the harness is killed before it
        flags=("breastmnist",),
        seeds=(0,),
    )
    task_dir = tmp_path / "run" / TASK
    try:
        wait_for(
            lambda: len(misbehaving.recorded_pids(task_dir)) >= 3, "the grandchild", proc, tmp_path
        )
        kill_harness(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    pids = misbehaving.recorded_pids(task_dir)
    time.sleep(1)
    assert misbehaving.live_pids(pids), "nothing outlived the harness: the test shows nothing"
    rows = run("mis_good", tiny_catalog, tmp_path / "next", sandbox="off")
    assert task_rows(rows, "breastmnist")["test"]["status"] == "ok"
    assert gone_within(pids) == []


# ---------------------------------------------------------------------------- data isolation


def hunt(tmp_path: Path, data: TinyData, *extra: str) -> tuple[dict[str, str], dict]:
    """Run the .npz hunter through the command line (so the harness's own command line names
    the data folder) and return its test row and what it found."""
    proc = start_run(tmp_path, data, "mis_npz_hunter", *extra, flags=("breastmnist",), seeds=(0,))
    assert proc.wait(timeout=600) == 0, (tmp_path / "harness-1.log").read_text()
    rows = task_rows(leaderboard.read(tmp_path / "run" / "leaderboard.csv"), "breastmnist")
    return rows["test"], json.loads(rows["test"]["notes"])


def test_a_sealed_adapter_cannot_find_the_test_labels(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    """Task fields and every folder above them (the run's config.json), every command line in
    sight, the environment, the home folder, ~/.medmnist, then every file reachable from `/`:
    the hunter comes back empty-handed, and its test AUC is that of random scores."""
    test, notes = hunt(tmp_path, tiny_catalog)
    assert test["status"] == "ok" and test["sealed"] == "true"
    assert notes["found"] == []
    assert notes["files_walked"] > 1000  # it did search the whole visible file system
    assert float(test["auc"]) < 0.99


@pytest.mark.parametrize(
    "layout", ["is the bound folder", "lies in a linked bound folder", "is a link in a bound one"]
)
def test_the_data_folder_stays_hidden_where_a_bound_folder_shows_it(
    tmp_path: Path, layout: str
) -> None:
    """A folder on the interpreter's sys.path is bound read-only (an editable install's project
    folder): when it was the data folder itself (``--data-dir .`` there), or a link to a folder
    holding the data folder, the data showed through whole; when a hidden folder was a link in
    it (``~/.medmnist`` to the data), bwrap could not mount on the link and no task started."""
    project = tmp_path / "project"
    data = project if layout == "is the bound folder" else project / "data"
    data.mkdir(parents=True)
    (data / "breastmnist.npz").write_bytes(b"test labels")
    bound, hidden = project, data
    if layout == "lies in a linked bound folder":
        bound = tmp_path / "project-link"
        bound.symlink_to(project)
    if layout == "is a link in a bound one":
        hidden = project / ".medmnist"
        hidden.symlink_to(data)
    view = sandbox.View(readable=(str(bound),), writable=(), hidden=(str(hidden),))
    args = sandbox.bwrap_arguments(view, ["find", str(bound)], network=False)
    done = subprocess.run(["bwrap", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert str(bound) in done.stdout and "breastmnist.npz" not in done.stdout


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_gpu_device_files_are_bound_for_a_task_on_cuda_only(
    tiny_catalog: TinyData,
    real_data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    device: str,
) -> None:
    """A task on ``cpu`` got the GPU device files all the same (``CUDA_VISIBLE_DEVICES=""`` is
    only a request): it could train on the GPU while its row said ``cpu``. Here a real
    MedMNIST file (outside the run's data folder, and outside /tmp, which every task gets
    empty) stands for the device, one the hunter recognises; it walks the whole view for it."""
    device_file = str(real_data_dir / "breastmnist.npz")
    monkeypatch.setattr(sandbox, "GPU_DEVICES", (device_file,))
    rows = run("mis_npz_hunter", tiny_catalog, tmp_path / "run", device=device)
    test = task_rows(rows, "breastmnist")["test"]
    assert test["sealed"] == "true" and test["device"] == device
    assert json.loads(test["notes"])["found"] == ([device_file] if device == "cuda" else [])


def test_an_environments_startup_code_runs_sealed_when_its_paths_are_asked(
    tmp_path: Path,
) -> None:
    """To know what to bind, the harness asks the task's interpreter for its sys.path, and the
    interpreter runs the ``import`` lines of the ``.pth`` files its packages installed: that
    ran unsealed, with the harness's whole view (the data folder, writable), before every run.
    Now it runs sealed: read-only, the data folder empty; the path lines still count."""
    env = tmp_path / "env"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120
    )
    site = Path(
        subprocess.run(
            [str(env / "bin" / "python"), "-c", "import site; print(site.getsitepackages()[0])"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
    )
    data, extra = tmp_path / "data", tmp_path / "extra"
    data.mkdir()
    extra.mkdir()
    (data / "breastmnist.npz").write_bytes(b"test labels")
    seen, planted = tmp_path / "seen.txt", tmp_path / "planted.txt"
    (site / "startup.pth").write_text(
        f"{extra}\n"
        "import os, pathlib;"
        f" pathlib.Path({str(seen)!r}).write_text(str(os.listdir({str(data)!r})))\n"
        f"import pathlib; pathlib.Path({str(planted)!r}).write_text('here')\n"
    )
    view = sandbox.task_view(
        python=str(env / "bin" / "python"),
        code=[],
        task_dirs=[],
        task_file=str(tmp_path / "task.json"),
        arrays=[],
        hidden=[str(data)],
    )
    assert str(env) in view.readable and str(extra) in view.readable
    assert not seen.exists() and not planted.exists()


def test_unsealed_the_same_adapter_finds_them(tiny_catalog: TinyData, tmp_path: Path) -> None:
    """The control: with --sandbox off the hunter finds the .npz (through the run's config.json)
    and scores a perfect test AUC, and every row says the run was not sealed."""
    test, notes = hunt(tmp_path, tiny_catalog, "--sandbox", "off")
    assert test["sealed"] == "false"
    assert notes["found"] and notes["found"][0].endswith("breastmnist.npz")
    assert float(test["auc"]) == 1.0
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["sandbox"]["sealed"] is False


def test_tasks_on_dask_workers_are_sealed_the_same(tiny_catalog: TinyData, tmp_path: Path) -> None:
    """On a Dask worker (a local cluster of one worker process) the task is sealed as it is
    locally: the hunter finds nothing there either."""
    pytest.importorskip("distributed")
    from decathlon.distributed import DaskExecutor

    config = RunConfig(
        adapter="mis_npz_hunter",
        profile="quick",
        datasets=("breastmnist",),
        seeds=(0,),
        data_dir=str(tiny_catalog.data_dir),
        download=False,
        info_path=str(tiny_catalog.info_path),
        n_jobs=1,
        options={"walk": False},
    )
    registry = make_registry(extra_plugins=[misbehaving])
    path = Runner(config, registry).run(tmp_path / "run", executor=DaskExecutor(workers=1))
    test = task_rows(leaderboard.read(path), "breastmnist")["test"]
    assert test["status"] == "ok" and test["sealed"] == "true"
    assert json.loads(test["notes"])["found"] == []


def test_data_location_variables_do_not_reach_the_worker(
    tiny_catalog: TinyData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DECATHLON_DATA_DIR", str(tiny_catalog.data_dir))
    rows = run("mis_npz_hunter", tiny_catalog, tmp_path / "run", options={"walk": False})
    test = task_rows(rows, "breastmnist")["test"]
    assert json.loads(test["notes"])["found"] == []
    task_log = (tmp_path / "run" / TASK / "log.txt").read_text()
    assert str(tiny_catalog.data_dir) not in task_log


# ---------------------------------------------------------------------------- what a task leaves


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("link", "test.npy is a symbolic link"),
        ("fifo", "test.npy is not a regular file"),
        ("dir", "test.npy is not a regular file"),
        ("empty", "test scores unreadable"),
        ("huge_header", "header declares shape (1000000000000, 2)"),
    ],
)
def test_scores_planted_after_the_worker_are_refused(
    tiny_catalog: TinyData, tmp_path: Path, mode: str, reason: str
) -> None:
    """After the worker wrote its scores, the adapter's atexit handler swaps test.npy for a link
    to another run's scores (which it cannot see, but the harness could), a FIFO (the harness
    would block for ever), a folder or an empty file: each is an ``invalid`` row with its reason,
    never a crash, a hang or another adapter's score. The result.json and evaluator link it
    tries to plant in its task folder never reach the host."""
    other = tmp_path / "other-run-test.npy"
    rng = np.random.default_rng(1)
    np.save(other, rng.dirichlet(np.ones(2), size=30))
    rows = run(
        "mis_planter", tiny_catalog, tmp_path / "run", options={"mode": mode, "target": str(other)}
    )
    test = task_rows(rows, "breastmnist")["test"]
    assert test["sealed"] == "true"
    assert test["status"] == "invalid" and reason in test["reason"], test["reason"]
    task = tmp_path / "run" / TASK
    assert (task / "result.json").is_file() and not (task / "evaluator").is_symlink()


@pytest.mark.parametrize("mode", ["nested_notes", "nested_error"])
def test_json_nested_past_the_recursion_limit_is_a_row_not_a_crash(
    tiny_catalog: TinyData, tmp_path: Path, mode: str
) -> None:
    """Notes (info.json) or an error record nested 200,000 deep (400 KB, under the size limit)
    made json.loads raise RecursionError in the harness, which ended the run with no leaderboard,
    and every resume the same. Now the notes are dropped (the scores stand) and the crash is
    told by its exit status; the next dataset still runs."""
    rows = run(
        "mis_planter",
        tiny_catalog,
        tmp_path / "run",
        datasets=("breastmnist", "retinamnist"),
        options={"mode": mode, "target": ""},
    )
    for flag in ("breastmnist", "retinamnist"):
        test = task_rows(rows, flag)["test"]
        if mode == "nested_notes":
            assert test["status"] == "ok" and test["notes"] == "", test
        else:
            assert test["status"] == "error" and test["reason"].startswith("worker exited 1"), test


def test_an_adapters_default_path_is_not_shown_and_a_users_is(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    """An option path the user gives is visible to the task; one that an adapter's defaults
    name is not bound at all (before, it was bound read-write: a default of /etc or of the
    harness's own packages made them writable from the task)."""
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "hello.txt").write_text("hello")

    prober = next(a for a in misbehaving.ADAPTERS if a.name == "mis_prober")
    # The adapter's own default budget may carry options too: not the user's either (a hostile
    # review read breastmnist's test labels from a copy of the data it named there).
    budget = {"quick": {"hard_limit_seconds": 60, "options": {"probe": str(folder)}}}

    class DefaultsPlugin:
        @hookimpl
        def decathlon_register_adapters(self, register) -> None:
            register(
                dataclasses.replace(
                    prober, name="mis_prober_default", options={"probe": str(folder)}
                )
            )
            register(dataclasses.replace(prober, name="mis_prober_budget", default_budgets=budget))

    registry = make_registry(extra_plugins=[misbehaving, DefaultsPlugin()])
    for name in ("mis_prober_default", "mis_prober_budget"):
        rows = run(name, tiny_catalog, tmp_path / name, registry=registry)
        notes = json.loads(task_rows(rows, "breastmnist")["test"]["notes"])
        assert notes == {"read": "FileNotFoundError", "wrote": "FileNotFoundError"}, name

    rows = run("mis_prober", tiny_catalog, tmp_path / "given", options={"probe": str(folder)})
    notes = json.loads(task_rows(rows, "breastmnist")["test"]["notes"])
    assert notes == {"read": "hello", "wrote": True}
    assert (folder / "written.txt").read_text() == "the adapter was here"


@pytest.mark.parametrize("where", ["holds the harness's code", "inside the interpreter's"])
def test_a_users_path_over_code_is_not_made_writable(
    tiny_catalog: TinyData, tmp_path: Path, where: str
) -> None:
    """A path the user gives that holds the harness's code (a project folder) or lies in the
    interpreter's packages was bound read-write: a task could rewrite code that then runs
    unsealed (in the next task, in ``setup``, in the harness). It stays read-only."""
    import decathlon

    if where == "holds the harness's code":
        folder = Path(decathlon.__file__).resolve().parents[1]
    else:
        folder = Path(sysconfig.get_paths()["purelib"]).resolve()
    written = folder / "written.txt"
    try:
        rows = run("mis_prober", tiny_catalog, tmp_path / "run", options={"probe": str(folder)})
        assert task_rows(rows, "breastmnist")["test"]["sealed"] == "true"
        # Where the folder is not bound at all, the task writes into its own private root.
        assert not written.exists()
    finally:
        written.unlink(missing_ok=True)


def test_the_sandboxs_first_process_cannot_be_traced(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    """bwrap's init is pid 1 of the task's namespace, of the task's user: a hostile review
    attached to it with ptrace, cleared the signal that ends the namespace with the harness,
    and its processes outlived a ``kill -9`` of the harness. ptrace and init's memory are
    refused now (the process_vm calls too, by the same filter)."""
    if sandbox.trace_filter() is None:
        pytest.skip("no libseccomp here")
    rows = run("mis_tracer", tiny_catalog, tmp_path / "run")
    test = task_rows(rows, "breastmnist")["test"]
    assert test["sealed"] == "true" and test["status"] == "ok", test
    notes = json.loads(test["notes"])
    assert notes["ptrace"] == "EPERM", notes
    assert notes["/proc/1/mem"] in ("EACCES", "EROFS", "EPERM"), notes
    assert notes["/proc/1/task/1/mem"] in ("EACCES", "EROFS", "EPERM"), notes
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["sandbox"]["tracing"] == "refused (seccomp)"


# ---------------------------------------------------------------------------- memory


@pytest.fixture
def cgroup() -> None:
    problem = cgroups.cgroup_problem()
    if problem:
        pytest.skip(f"no memory cgroup here: {problem}")


def test_one_large_allocation_is_stopped_by_the_kernel(
    tiny_catalog: TinyData, tmp_path: Path, cgroup: None
) -> None:
    """A single 2 GB allocation under --memory-mb 300: the kernel stops it at the cap (no
    sampling window to slip through), and the row says so."""
    rows = run(
        "mis_memory_hog",
        tiny_catalog,
        tmp_path / "run",
        memory_mb=300,
        options={"megabytes": 2048},
    )
    test = task_rows(rows, "breastmnist")["test"]
    assert test["status"] == "error"
    assert test["reason"] == "stopped by the kernel at the memory cap of 300 MB"
    assert_tree_gone(tmp_path / "run" / TASK)
    parent = cgroups._cgroup_parent()
    assert parent is not None
    tag = misbehaving.task_tag(tmp_path / "run" / TASK)
    assert not list(parent[1].glob(f"decathlon-*-{tag}")), "the task's cgroup was left behind"


# ---------------------------------------------------------------------------- processes


@pytest.fixture
def pids_cgroup() -> None:
    problem = cgroups.pids_problem()
    if problem:
        pytest.skip(f"no pids cgroup here: {problem}")


def test_a_fork_bomb_gets_no_more_than_its_process_cap(
    tiny_catalog: TinyData, tmp_path: Path, pids_cgroup: None
) -> None:
    """A task that forks without end takes at most ``--max-processes`` of the machine's process
    table: the kernel refuses it the rest, so the harness and the other tasks can still start
    theirs; the row says so, and nothing of it is left."""
    rows = run(
        "mis_forker",
        tiny_catalog,
        tmp_path / "run",
        max_processes=40,
        options={"processes": 300, "then": "raise"},
    )
    test = task_rows(rows, "breastmnist")["test"]
    assert test["status"] == "error", test
    started = int(test["reason"].split("started ")[1].split()[0])
    assert 0 < started < 40, test["reason"]
    assert "then BlockingIOError" in test["reason"], test["reason"]
    assert "the kernel refused it" in test["reason"], test["reason"]
    assert test["reason"].endswith("at the cap of 40 (--max-processes)"), test["reason"]
    assert_tree_gone(tmp_path / "run" / TASK)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["sandbox"]["process_cap"] == f"40 (kernel, {cgroups.cgroup_kind('pids')})"
    tag = misbehaving.task_tag(tmp_path / "run" / TASK)
    parent = cgroups._parents()["pids"][1]
    assert not list(parent.glob(f"decathlon-*-{tag}")), "the task's cgroup was left behind"


def test_a_task_that_hangs_after_a_refusal_says_so_at_its_hard_limit(
    tiny_catalog: TinyData, tmp_path: Path, pids_cgroup: None
) -> None:
    """A pool that waits for the worker it was refused hangs until the hard limit: its timeout
    row said nothing of the cap, as if the adapter were slow."""
    rows = run(
        "mis_forker",
        tiny_catalog,
        tmp_path / "run",
        max_processes=40,
        scale_factor=0.1,
        options={"processes": 300, "then": "hang"},
    )
    test = task_rows(rows, "breastmnist")["test"]
    assert test["status"] == "timeout", test
    assert test["reason"].startswith("killed at the hard limit of 6 s; the kernel refused it ")
    assert test["reason"].endswith("at the cap of 40 (--max-processes)"), test["reason"]
    assert_tree_gone(tmp_path / "run" / TASK)


def test_max_processes_zero_is_no_cap(
    tiny_catalog: TinyData, tmp_path: Path, pids_cgroup: None
) -> None:
    rows = run(
        "mis_forker",
        tiny_catalog,
        tmp_path / "run",
        max_processes=0,
        options={"processes": 300, "then": "predict"},
    )
    test = task_rows(rows, "breastmnist")["test"]
    assert test["status"] == "ok", test
    assert json.loads(test["notes"]) == {"started": 300, "failure": ""}
    assert_tree_gone(tmp_path / "run" / TASK)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["sandbox"]["process_cap"] is None


def test_a_process_cap_the_kernel_refuses_keeps_the_memory_cap(
    cgroup: None, pids_cgroup: None
) -> None:
    """pids.max takes at most 4194304: past it the whole cgroup was dropped, the memory cap
    with it (sampled instead, while config.json said the kernel enforced it)."""
    made = cgroups.TaskCgroup.create(f"huge-{os.getpid()}", limit_mb=100, max_processes=2**23)
    assert made is not None
    try:
        assert made.limit_mb == 100 and made.memory_folder is not None
        assert made.pids_folder is None and made.max_processes is None
    finally:
        made.remove()


@pytest.mark.parametrize("where", ["here", "another PID namespace"])
def test_a_live_harnesss_cgroups_are_not_swept_by_another(pids_cgroup: None, where: str) -> None:
    """A task cgroup is empty from its making until its task joins it. Another harness (here a
    second process, as a Dask worker beside this one is) making its own swept away the empty
    ones of live harnesses too, and the task failed to start ("worker exited 2": its shell
    could not join the folder). From another PID namespace (a container beside this one) it
    also took a live harness for gone, its pid meaning another process there, and killed its
    task. Neither sweeps them now: here one that is empty, and one that holds a process."""
    import shutil
    import sys

    if where != "here" and not shutil.which("unshare"):
        pytest.skip("no unshare here")
    empty = cgroups.TaskCgroup.create(f"sweep-{os.getpid()}", max_processes=64)
    busy = cgroups.TaskCgroup.create(f"busy-{os.getpid()}", max_processes=64)
    assert empty is not None and empty.pids_folder is not None
    assert busy is not None and busy.pids_folder is not None
    task = subprocess.Popen(busy.wrap(["sleep", "120"]))
    try:
        while not busy.pids():
            time.sleep(0.01)
        other = (
            "import os; from decathlon import cgroups\n"
            "made = cgroups.TaskCgroup.create(f'other-{os.getpid()}', max_processes=64)\n"
            "made.remove()\n"
        )
        namespace = [] if where == "here" else ["unshare", "-pf", "--mount-proc"]
        subprocess.run([*namespace, sys.executable, "-c", other], check=True, timeout=120)
        assert empty.pids_folder.is_dir(), "a live harness's new cgroup was swept away"
        assert task.poll() is None, "a live harness's task was killed"
    finally:
        task.kill()
        task.wait()
        empty.remove()
        busy.remove()
    assert not empty.pids_folder.exists() and not busy.pids_folder.exists()


# ---------------------------------------------------------------------------- network


@pytest.mark.parametrize("network", ["on", "off"])
def test_network_on_by_default_off_on_request(
    tiny_catalog: TinyData, tmp_path: Path, http_server: tuple[str, Path], network: str
) -> None:
    url, served = http_server
    (served / "hello.txt").write_text("hello from outside")
    rows = run(
        "mis_network",
        tiny_catalog,
        tmp_path / "run",
        network=network,
        options={"url": f"{url}/hello.txt"},
    )
    test = task_rows(rows, "breastmnist")["test"]
    got = json.loads(test["notes"])
    if network == "on":
        assert got == {"body": "hello from outside"}
    else:
        assert "error" in got and "body" not in got


# ---------------------------------------------------------------------------- --sandbox


def _without_bwrap(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    """``env`` with a PATH that holds every program of the real one except bwrap."""
    bin_dir = tmp_path / "bin-without-bwrap"
    bin_dir.mkdir()
    for folder in env["PATH"].split(os.pathsep):
        for program in Path(folder).glob("*") if Path(folder).is_dir() else ():
            target = bin_dir / program.name
            if program.name != "bwrap" and not target.exists():
                target.symlink_to(program)
    return dict(env, PATH=str(bin_dir))


def _run_without_bwrap(
    tiny_catalog: TinyData, tmp_path: Path, *flags: str
) -> subprocess.CompletedProcess[str]:
    """``decathlon run`` of a good adapter on breastmnist on a machine without bwrap."""
    cmd, env = harness(
        tmp_path,
        tiny_catalog,
        "--adapter",
        "mis_good",
        "--profile",
        "quick",
        "--datasets",
        "breastmnist",
        "--data-dir",
        str(tiny_catalog.data_dir),
        "--run-dir",
        str(tmp_path / "run"),
        *flags,
    )
    env = _without_bwrap(tmp_path, env)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_required_refuses_to_start_without_a_sandbox(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    done = _run_without_bwrap(tiny_catalog, tmp_path, "--sandbox", "required")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--sandbox required" in lines[0] and "bwrap" in lines[0]
    assert not (tmp_path / "run").exists()


def test_auto_without_a_sandbox_runs_unsealed_and_says_so(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    done = _run_without_bwrap(tiny_catalog, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    said = " ".join(done.stdout.split())  # the console wraps long lines
    assert said.count("no sandbox") == 1
    assert "bwrap" in said and "tasks run unsealed (sealed=false in every row)" in said
    board = (tmp_path / "run" / "leaderboard.csv").read_text().splitlines()
    assert board[0].split(",") == list(COLUMNS)
    rows = leaderboard.read(tmp_path / "run" / "leaderboard.csv")
    assert sealed(rows) == {"false"}


def test_network_off_without_the_sandbox_is_refused(tiny_catalog: TinyData, tmp_path: Path) -> None:
    cmd, env = harness(
        tmp_path,
        tiny_catalog,
        "--adapter",
        "mis_good",
        "--profile",
        "quick",
        "--run-dir",
        str(tmp_path / "run"),
        "--sandbox",
        "off",
        "--network",
        "off",
    )
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --network off needs the sandbox; drop --sandbox off"


def test_a_sealed_task_sees_only_its_own_processes(tiny_catalog: TinyData, tmp_path: Path) -> None:
    """Inside, /proc lists the sandbox's init, the worker and its children: not the harness."""
    rows = run("mis_spawner", tiny_catalog, tmp_path / "run", options={"mode": "return"})
    all_status(task_rows(rows, "breastmnist"), "ok")
    recorded = misbehaving.recorded_pids(tmp_path / "run" / TASK)
    # The worker is the namespace's second process (bwrap's init is the first).
    assert [int(line.split()[0]) for line in recorded][:1] == [2]
    # What the adapter left running was ended when the worker was done, and the log says so.
    assert "process(es) terminated" in (tmp_path / "run" / TASK / "log.txt").read_text()
    assert_tree_gone(tmp_path / "run" / TASK)


def test_the_default_data_folders_linked_files_are_hidden_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folders where the default data folder's files really are (links into a store) were
    hidden only for a --data-dir, so the import check and setup's probe, which hide the default
    folder, left them shown wherever a bound folder held them."""
    from decathlon import launcher

    store, data = tmp_path / "store", tmp_path / "data"
    store.mkdir()
    data.mkdir()
    (store / "breastmnist.npz").write_bytes(b"labels")
    (data / "breastmnist.npz").symlink_to(store / "breastmnist.npz")
    monkeypatch.setenv("DECATHLON_DATA_DIR", str(data))
    hidden = launcher.data_locations()
    assert str(data.resolve()) in hidden and str(store.resolve()) in hidden


def test_memory_held_in_the_private_tmp_counts_against_a_sampled_cap(
    tiny_catalog: TinyData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a memory cgroup the cap is sampled from the processes' memory: files in a sealed
    task's /tmp and home folder (tmpfs, in memory) are mapped by no process, so 600 MB held
    there under --memory-mb 200 ended as an ``ok`` row. What those folders hold now counts."""
    monkeypatch.setattr(sandbox, "cgroup_problem", lambda: "no memory cgroup (this test)")
    rows = run(
        "mis_tmpfs_filler",
        tiny_catalog,
        tmp_path / "run",
        memory_mb=200,
        options={"megabytes": 300, "hold": 6.0},
    )
    test = task_rows(rows, "breastmnist")["test"]
    assert test["sealed"] == "true"
    assert test["status"] == "error", test
    assert test["reason"] == "killed over the memory cap of 200 MB"
    assert_tree_gone(tmp_path / "run" / TASK)


def test_a_sealed_task_cannot_write_the_kernels_settings(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    """The sandbox's own /proc showed /proc/sys (and /proc/sysrq-trigger) writable: a task of
    root, every capability dropped, could still set ``kernel.core_pattern`` to a script in its
    folder, which the kernel runs as root outside the sandbox at the next core dump (test
    labels, no budget), or reboot the machine. Both are read-only now."""
    rows = run("mis_sysctl_writer", tiny_catalog, tmp_path / "run")
    test = task_rows(rows, "breastmnist")["test"]
    assert test["status"] == "ok" and test["sealed"] == "true"
    notes = json.loads(test["notes"])
    assert set(notes) == set(misbehaving.KERNEL_SETTINGS)
    opened = [name for name, got in notes.items() if got == "opened"]
    assert opened == [], notes


#: Writes up to 96 MB into each of /tmp and /dev/shm (a bound, so that old code cannot fill the
#: machine), then prints what it wrote and the error that stopped it.
_FILL_IN_MEMORY_FOLDERS = """
import json, os
found = {}
for folder in ("/tmp", "/dev/shm"):
    written, error = 0, None
    try:
        with open(folder + "/fill.bin", "wb") as handle:
            while written < 96:
                handle.write(b"1" * 2**20)
                handle.flush()
                written += 1
    except OSError as exc:
        error = exc.errno
    os.remove(folder + "/fill.bin")
    found[folder] = [written, error]
print(json.dumps(found))
"""


def test_a_sealed_tasks_in_memory_folders_are_bounded_by_its_memory_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sealed task's /tmp, home folder and /dev/shm were tmpfs mounts of the kernel's default
    size, half of the machine's memory each: a task could fill them until the harness or the
    machine was killed in its place (no process owns a tmpfs page). Under --memory-mb 64 each
    now holds at most 64 MB, and a write past it fails with ENOSPC, which the task sees."""
    helps = subprocess.run(["bwrap", "--help"], capture_output=True, text=True, timeout=30)
    if "--size" not in helps.stdout or not os.path.exists("/usr/bin/python3"):
        pytest.skip("this bwrap has no --size, or no /usr/bin/python3 (a system folder)")
    monkeypatch.setattr(sandbox, "cgroup_problem", lambda: "no memory cgroup (this test)")
    view = sandbox.View(readable=(), writable=(), cwd="/")
    policy = sandbox.Policy(mode="auto", sealed=True)
    seal = sandbox.seal(policy, tag="dcl-tmpfs-test", memory_mb=64, view=view)
    try:
        argv, fds = seal.command(["/usr/bin/python3", "-c", _FILL_IN_MEMORY_FOLDERS])
        done = subprocess.run(argv, pass_fds=fds, capture_output=True, text=True, timeout=120)
    finally:
        seal.close()
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    for folder in ("/tmp", "/dev/shm"):
        written, error = found[folder]
        assert error == 28 and written <= 64, (folder, found)  # ENOSPC at the bound


def test_without_a_memory_cap_the_in_memory_folders_share_half_of_memory() -> None:
    """Without --memory-mb each in-memory folder is bounded too: together at most half of
    physical memory (the kernel's default is half each)."""
    import psutil

    each = sandbox.tmpfs_bytes(None)
    folders = len(sandbox.private_folders()) + 1
    assert each * folders <= max(psutil.virtual_memory().total // 2, folders * 64 * 2**20)
    args = sandbox.bwrap_arguments(sandbox.View(readable=(), writable=()), ["true"], network=False)
    if sandbox.tmpfs_size_supported():
        for folder in [*sandbox.private_folders(), "/dev/shm"]:
            at = [i for i, a in enumerate(args) if a == folder and args[i - 1] == "--tmpfs"]
            assert at and args[at[0] - 3 : at[0] - 1] == ["--size", str(each)], folder


def test_a_bwrap_without_size_is_said_once_at_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """An older bwrap (before 0.5) cannot bound a tmpfs: the run still seals, and says so."""
    monkeypatch.setattr(sandbox, "tmpfs_size_supported", lambda: False)
    policy = sandbox.Policy.resolve("auto")
    assert policy.sealed and "has no --size" in policy.notice
    args = sandbox.bwrap_arguments(sandbox.View(readable=(), writable=()), ["true"], network=False)
    assert "--size" not in args and "--tmpfs" in args


@pytest.mark.parametrize("how", ["memfd", "sysv"])
def test_shared_memory_no_process_maps_counts_against_a_sampled_cap(
    tiny_catalog: TinyData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Without a memory cgroup the cap is sampled: 150 MB written into a memfd kept open but
    never mapped, or into a SysV segment detached and left in the sandbox's IPC namespace,
    showed in no process's memory nor in any folder, and the task ended ``ok`` under
    --memory-mb 100. That memory now counts."""
    monkeypatch.setattr(sandbox, "cgroup_problem", lambda: "no memory cgroup (this test)")
    rows = run(
        "mis_shm_holder",
        tiny_catalog,
        tmp_path / "run",
        memory_mb=100,
        options={"how": how, "megabytes": 150},
    )
    test = task_rows(rows, "breastmnist")["test"]
    assert test["sealed"] == "true"
    assert test["status"] == "error", test
    assert test["reason"] == "killed over the memory cap of 100 MB"
    assert_tree_gone(tmp_path / "run" / TASK)


@pytest.mark.parametrize("mapped", [False, True])
def test_a_memfd_counts_once_whether_mapped_or_not(mapped: bool) -> None:
    """A memfd's pages that a process of the task maps are in its PSS already: only the rest
    is added, so a mapped memfd (PyTorch's shared tensors) is not counted twice."""
    code = (
        "import mmap, os, sys, time\n"
        "fd = os.memfd_create('held')\n"
        "os.write(fd, b'1' * 48 * 2**20)\n"
        f"if {mapped}:\n"
        "    m = mmap.mmap(fd, 48 * 2**20)\n"
        "    total = sum(m[i] for i in range(0, len(m), 4096))\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        extra_mb = enforcement.shared_memory_unmapped(child.pid) / 2**20
    finally:
        child.kill()
        child.wait()
    assert (extra_mb < 2) if mapped else (46 < extra_mb < 50), extra_mb


def test_a_mapped_file_of_dev_shm_counts_once_against_a_sampled_cap(
    tiny_catalog: TinyData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a memory cgroup the cap is sampled: a file of /dev/shm that the task maps
    (PyTorch's loader workers share tensors so) was counted twice, once as what the folder
    holds and once in the process's PSS, so 150 MB of it under --memory-mb 250 was killed.
    It counts once now."""
    monkeypatch.setattr(sandbox, "cgroup_problem", lambda: "no memory cgroup (this test)")
    rows = run(
        "mis_shm_mapper",
        tiny_catalog,
        tmp_path / "run",
        memory_mb=250,
        options={"how": "shm_file", "megabytes": 150},
    )
    test = task_rows(rows, "breastmnist")["test"]
    assert test["sealed"] == "true"
    assert test["status"] == "ok", test


#: Tries to create a file in each folder, then prints the error each got (null: none).
_CREATE_FILES = """
import json, os, sys
found = {}
for folder in sys.argv[1:]:
    try:
        with open(os.path.join(folder, "new.txt"), "w") as handle:
            handle.write("x")
        found[folder] = None
    except OSError as exc:
        found[folder] = exc.errno
with open("/dev/null", "w") as handle:
    handle.write("x")
print(json.dumps(found))
"""


def test_a_sealed_tasks_root_and_dev_are_read_only(tmp_path: Path) -> None:
    """bwrap's root (``/``) and ``/dev`` are tmpfs mounts of their own that no --size bounds
    and no sampled cap counts: a sealed task could write ``/x`` or ``/dev/x`` until memory ran
    out. Both are read-only now (EROFS), while what is mounted on them stays writable: its
    task folder, /tmp, home, /dev/shm, /dev/null."""
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("no /usr/bin/python3 (a system folder)")
    output = tmp_path / "out"
    output.mkdir()
    view = sandbox.View(readable=(), writable=(str(output),), cwd="/")
    seal = sandbox.seal(
        sandbox.Policy(mode="auto", sealed=True), tag="dcl-ro-test", memory_mb=None, view=view
    )
    writable = [str(output), *sandbox.private_folders(), "/dev/shm"]
    try:
        argv, fds = seal.command(["/usr/bin/python3", "-c", _CREATE_FILES, "/", "/dev", *writable])
        done = subprocess.run(argv, pass_fds=fds, capture_output=True, text=True, timeout=120)
    finally:
        seal.close()
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["/"] == found["/dev"] == errno.EROFS, found
    assert all(found[folder] is None for folder in writable), found
    assert (output / "new.txt").read_text() == "x"
