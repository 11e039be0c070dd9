"""The Dask executor on a real cluster on 127.0.0.1: a ``dask scheduler`` and two ``dask worker``
processes started from the command line (module fixture), and the CLI's own local cluster.

The slow test adapter lives in ``tests/distributed_plugin.py``; the Dask workers load it from its
file (they do not have ``tests/`` on their path), as they would any plugin the client registered.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from decathlon import leaderboard, rundir
from decathlon.distributed import SHIP_OUTPUT_LIMIT, DaskExecutor
from decathlon.distributed import _result as task_folder_result
from decathlon.plugins import Registry, make_registry
from decathlon.runner import RunConfig, Runner

sys.path.insert(0, str(Path(__file__).resolve().parent))
import distributed_plugin  # noqa: E402

distributed = pytest.importorskip("distributed")

REPO = Path(__file__).resolve().parents[1]
REAL_FLAGS = ("breastmnist", "pneumoniamnist", "retinamnist")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A scheduler and two single-threaded workers (each under a nanny that restarts it when it
    is killed); the second worker advertises ``GPU=1``. Yields the scheduler's address."""
    root = tmp_path_factory.mktemp("dask")
    scheduler_file = root / "scheduler.json"
    logs = []
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> None:
        log_file = open(root / f"{len(procs)}.log", "w")
        logs.append(log_file)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "dask", *args],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=root,
            )
        )

    start("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
          "--scheduler-file", str(scheduler_file))  # fmt: skip
    worker = ["worker", "--scheduler-file", str(scheduler_file), "--host", "127.0.0.1",
              "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
              "--local-directory", str(root)]  # fmt: skip
    start(*worker)
    start(*worker, "--resources", "GPU=1")
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        _wait_for_workers(address, 2)
        yield address
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGINT)
        for proc in reversed(procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log_file in logs:
            log_file.close()


def _workers(address: str) -> dict[str, dict[str, Any]]:
    with distributed.Client(address, timeout="20s") as client:
        return client.scheduler_info(n_workers=-1)["workers"]


def _wait_for_workers(address: str, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(_workers(address)) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {n} Dask workers after {timeout} s")
        time.sleep(0.5)


def _registry() -> Registry:
    return make_registry([distributed_plugin])


def _slow_config(tiny_catalog: Any, marker_dir: Path, **changes: Any) -> RunConfig:
    values: dict[str, Any] = dict(
        adapter="dask_test_slow",
        profile="quick",
        datasets=("breastmnist", "dermamnist"),
        seeds=(0, 1),
        data_dir=str(tiny_catalog.data_dir),
        download=False,
        info_path=str(tiny_catalog.info_path),
        n_jobs=1,
        options={"sleep_s": 4, "marker_dir": str(marker_dir)},
    )
    values.update(changes)
    return RunConfig(**values)


def _markers(marker_dir: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted(marker_dir.glob("*.json")):
        found.append(dict(json.loads(path.read_text()), name=path.name))
    return found


def _kill_first_worker(marker_dir: Path, killed: list[dict[str, Any]]) -> threading.Thread:
    """In the background: SIGKILL the Dask worker of the first task that starts."""

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            found = _markers(marker_dir)
            if found:
                os.kill(_starter(found[0]["tag"]), signal.SIGKILL)
                killed.append(found[0])
                return
            time.sleep(0.1)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _starter(tag: str) -> int:
    """The pid of the process that started the task tagged ``tag`` (its Dask worker): the parent
    of the outermost process that carries the tag (the sandbox, or the worker when unsealed)."""
    import misbehaving

    tagged = {p.pid: p for p in misbehaving.tagged_processes(tag)}
    outermost = [p for p in tagged.values() if p.ppid() not in tagged]
    assert len(outermost) == 1, outermost
    return outermost[0].ppid()


def _assert_consistent(rows: list[dict[str, str]], flags: tuple[str, ...], seeds: tuple) -> None:
    """Every (dataset, seed, split) exactly once."""
    keys = Counter(
        (r["dataset"], int(r["seed"]), r["split"])
        for r in rows
        if r["dataset"] != leaderboard.SUMMARY_DATASET
    )
    expected = {(f, s, split) for f in flags for s in seeds for split in leaderboard.SPLITS}
    assert set(keys) == expected
    assert set(keys.values()) == {1}


def test_killed_worker_gives_a_worker_died_row(
    cluster: str, tiny_catalog: Any, tmp_path: Path
) -> None:
    _wait_for_workers(cluster, 2)
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()
    killed: list[dict[str, Any]] = []
    watcher = _kill_first_worker(marker_dir, killed)
    runner = Runner(_slow_config(tiny_catalog, marker_dir), _registry())
    path = runner.run(tmp_path / "run", executor=DaskExecutor(cluster))
    watcher.join(timeout=5)
    assert killed, "no task started"
    rows = leaderboard.read(path)
    _assert_consistent(rows, ("breastmnist", "dermamnist"), (0, 1))
    died = [r for r in rows if r["status"] != "ok" and r["dataset"] != "decathlon"]
    flag = killed[0]["name"].split("-")[0]
    assert {(r["dataset"], int(r["seed"])) for r in died} == {(flag, killed[0]["seed"])}
    assert all(r["status"] == "error" and "worker died" in r["reason"] for r in died)
    # The dead attempt's scratch folder went with it, as a finished task's does.
    task_folder = rundir.task_dir(path.parent, flag, killed[0]["seed"])
    assert task_folder.is_dir() and not (task_folder / rundir.SCRATCH).exists()
    # Not retried: the killed task's adapter started once.
    started = Counter(m["name"].rsplit("-", 1)[0] for m in _markers(marker_dir))
    assert set(started.values()) == {1}


def test_killed_worker_with_retries_reruns_the_task(
    cluster: str, tiny_catalog: Any, tmp_path: Path
) -> None:
    _wait_for_workers(cluster, 2)
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()
    killed: list[dict[str, Any]] = []
    watcher = _kill_first_worker(marker_dir, killed)
    runner = Runner(_slow_config(tiny_catalog, marker_dir), _registry())
    path = runner.run(tmp_path / "run", executor=DaskExecutor(cluster, retries=1))
    watcher.join(timeout=5)
    assert killed
    rows = leaderboard.read(path)
    _assert_consistent(rows, ("breastmnist", "dermamnist"), (0, 1))
    assert {r["status"] for r in rows if r["dataset"] != "decathlon"} == {"ok"}
    started = Counter(m["name"].rsplit("-", 1)[0] for m in _markers(marker_dir))
    assert started[killed[0]["name"].rsplit("-", 1)[0]] == 2
    assert sum(started.values()) == 5


def test_gpu_tasks_land_on_gpu_workers_only(
    cluster: str, tiny_catalog: Any, tmp_path: Path
) -> None:
    _wait_for_workers(cluster, 2)
    with distributed.Client(cluster, timeout="20s") as client:
        pids = client.run(os.getpid)
        gpu_pids = {
            pids[address]
            for address, worker in client.scheduler_info(n_workers=-1)["workers"].items()
            if worker["resources"].get("GPU")
        }
    assert len(gpu_pids) == 1
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()
    config = _slow_config(
        tiny_catalog,
        marker_dir,
        adapter="dask_test_gpu",
        device="cuda",
        options={"sleep_s": 0.5, "marker_dir": str(marker_dir)},
        # The markers name the adapter's parent process, which a sealed task cannot see (its
        # parent is the sandbox's init): placement is what this test checks, not sealing.
        sandbox="off",
    )
    path = Runner(config, _registry()).run(tmp_path / "run", executor=DaskExecutor(cluster))
    rows = leaderboard.read(path)
    _assert_consistent(rows, ("breastmnist", "dermamnist"), (0, 1))
    assert {m["parent"] for m in _markers(marker_dir)} == gpu_pids


def test_resume_across_executors_and_unshared_run_dir(
    cluster: str, tiny_catalog: Any, tmp_path: Path
) -> None:
    """A run started locally finishes on the cluster (workers that do not see the run folder
    send each task's folder back); only the unfinished task runs again."""
    _wait_for_workers(cluster, 2)
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()
    config = _slow_config(
        tiny_catalog, marker_dir, options={"sleep_s": 0.1, "marker_dir": str(marker_dir)}
    )
    run_dir = tmp_path / "run"
    Runner(config, _registry()).run(run_dir)
    before = _task_tags(run_dir)
    (run_dir / "tasks" / "dermamnist" / "seed1" / "result.json").unlink()
    executor = DaskExecutor(cluster, shared_run_dir=False)
    path = Runner(config, _registry()).run(run_dir, resume=True, executor=executor)
    rows = leaderboard.read(path)
    _assert_consistent(rows, ("breastmnist", "dermamnist"), (0, 1))
    assert len(_markers(marker_dir)) == 5
    after = _task_tags(run_dir)  # each execution of a task gets a new tag in its task.json
    assert {key for key in before if after[key] != before[key]} == {"dermamnist/seed1"}
    task_dir = run_dir / "tasks" / "dermamnist" / "seed1"
    for name in ("log.txt", "task.json", "result.json", "predictions/test.npy", "output"):
        assert (task_dir / name).exists(), name


def _task_tags(run_dir: Path) -> dict[str, str]:
    return {
        f"{path.parent.parent.name}/{path.parent.name}": json.loads(path.read_text())["tag"]
        for path in (run_dir / "tasks").glob("*/seed*/task.json")
    }


def _ok(run_dir: Path) -> list[dict[str, str]]:
    rows = leaderboard.read(run_dir / "leaderboard.csv")
    return [r for r in rows if r["dataset"] != leaderboard.SUMMARY_DATASET]


@pytest.mark.realdata
def test_cli_local_cluster_gives_the_sequential_scores(real_data_dir: Path, tmp_path: Path) -> None:
    """``run --workers 2`` (the CLI's local cluster) on the three real subsets scores the baseline
    exactly as the local sequential run does."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for flag in REAL_FLAGS:
        (data_dir / f"{flag}.npz").symlink_to(real_data_dir / f"{flag}.npz")
    options = {"max_iter": 30, "pca_components": 32}
    config = RunConfig(
        adapter="baseline",
        profile="quick",
        datasets=REAL_FLAGS,
        seeds=(0,),
        data_dir=str(data_dir),
        download=False,
        n_jobs=1,
        options=options,
    )
    local = leaderboard.read(Runner(config, make_registry()).run(tmp_path / "local"))
    cmd = [sys.executable, "-m", "decathlon", "run", "--adapter", "baseline", "--profile",
           "quick", "--datasets", ",".join(REAL_FLAGS), "--seeds", "0", "--data-dir",
           str(data_dir), "--no-download", "--jobs", "1", "--run-dir", str(tmp_path / "dask"),
           "--workers", "2", "--no-progress"]  # fmt: skip
    for key, value in options.items():
        cmd += ["--option", f"{key}={value}"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    remote = leaderboard.read(tmp_path / "dask" / "leaderboard.csv")
    _assert_consistent(remote, REAL_FLAGS, (0,))
    assert len(remote) == len(local)
    by_key = {(r["dataset"], r["seed"], r["split"]): r for r in local}
    for row in remote:
        expected = by_key[(row["dataset"], row["seed"], row["split"])]
        assert row["status"] == expected["status"]
        if row["dataset"] != leaderboard.SUMMARY_DATASET:
            assert row["status"] == "ok", row["reason"]
            for metric in ("auc", "acc"):
                assert float(row[metric]) == pytest.approx(float(expected[metric]), abs=1e-9)


def test_task_resources(tiny_catalog: Any, tmp_path: Path) -> None:
    """GPU adapters ask for a GPU unless --device cpu; cores are asked for only where some worker
    advertises CPU."""
    executor = DaskExecutor(workers=1)

    def wanted(adapter: str, device: str, workers: list[dict[str, float]]) -> dict:
        config = _slow_config(tiny_catalog, tmp_path, adapter=adapter, device=device, n_jobs=3)
        return executor.resources(Runner(config, _registry()), workers)

    assert wanted("dask_test_gpu", "cuda", [{}]) == {"GPU": 1}
    assert wanted("dask_test_gpu", "auto", [{}]) == {"GPU": 1}
    assert wanted("dask_test_gpu", "cpu", [{"GPU": 1}]) == {}
    assert wanted("dask_test_slow", "auto", [{"GPU": 1}]) == {}
    assert wanted("dask_test_slow", "auto", [{}, {"CPU": 8}]) == {"CPU": 3}


def test_workers_get_a_data_folder_only_where_the_run_named_one(
    tiny_catalog: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """config.json records the data folder and the metadata file however they were found (for a
    resume); a Dask worker still gets the data folder only where the run named one (else it uses
    its own), and the metadata file's text only where it is not the bundled one."""
    from decathlon import datasets
    from decathlon.distributed import shipped_files, worker_config

    monkeypatch.setenv("DECATHLON_DATA_DIR", str(tmp_path / "client-data"))
    monkeypatch.delenv("DECATHLON_INFO", raising=False)
    found = Runner(RunConfig(adapter="baseline"), make_registry())
    assert found.config.data_dir == str((tmp_path / "client-data").resolve())
    assert found.config.info_path == str(datasets.BUNDLED_INFO.resolve())
    sent = worker_config(found)
    assert sent["data_dir"] is None and sent["data_dir_from"] is None
    assert set(shipped_files(found)) == {"budgets_path"}
    monkeypatch.setenv("DECATHLON_DATA_DIR", str(tmp_path / "worker-data"))
    on_worker = Runner(RunConfig.from_json(sent), make_registry())
    assert on_worker.data_dir == (tmp_path / "worker-data").resolve()
    assert on_worker.catalog.path == datasets.BUNDLED_INFO

    monkeypatch.setenv("DECATHLON_INFO", str(tiny_catalog.info_path))
    named = Runner(
        RunConfig(adapter="baseline", data_dir=str(tmp_path / "shared")), make_registry()
    )
    assert worker_config(named)["data_dir"] == str(tmp_path / "shared")
    assert shipped_files(named)["info_path"] == tiny_catalog.info_path.read_text()


def test_a_plugin_module_without_a_file_is_sent_by_name() -> None:
    """A plugin module made in memory has no __file__: workers get its name to import (this
    crashed with Path(None) before the type checks found it)."""
    import types

    from decathlon.contract import Adapter
    from decathlon.distributed import plugin_refs
    from decathlon.hookspecs import hookimpl

    module = types.ModuleType("in_memory_plugin")

    @hookimpl
    def decathlon_register_adapters(register: Any) -> None:
        register(Adapter(name="in_memory", run="in_memory_plugin:run"))

    module.decathlon_register_adapters = decathlon_register_adapters  # type: ignore[attr-defined]
    (ref,) = plugin_refs(make_registry([module], entry_points=False))
    assert ref.module == "in_memory_plugin" and ref.path is None and ref.obj is None


def test_the_local_cluster_refuses_a_client_without_its_certificate() -> None:
    """A task whose network is on can reach the loopback; the local cluster it runs on speaks
    TLS with a certificate held in memory, so the task cannot submit work that the unsealed
    workers would run."""
    client, cluster = DaskExecutor(workers=1)._connect()
    try:
        address = cluster.scheduler_address
        assert address.startswith("tls://127.0.0.1:")
        from distributed.security import Security

        with pytest.raises((OSError, TimeoutError)):  # plain TCP
            distributed.Client(address.replace("tls://", "tcp://"), timeout="3s")
        with pytest.raises((OSError, TimeoutError)):  # TLS with a certificate of its own
            distributed.Client(address, security=Security.temporary(), timeout="3s")
    finally:
        client.close()
        cluster.close()


def test_a_task_folder_sent_back_holds_no_link_and_no_fifo(tmp_path: Path) -> None:
    """A worker that does not see the run folder zips the task's folder back to the client. A
    link the (sealed) adapter left in output/ shipped what it pointed at, from outside the
    sandbox (the data files with test labels); a FIFO blocked the zipping for ever."""

    class Runner:  # the one thing _result asks of the runner
        def task_dir(self, where: Path, task: Any) -> Path:
            return where / "task"

    output = tmp_path / "task" / "output"
    output.mkdir(parents=True)
    (output / "model.txt").write_text("kept")
    secret = tmp_path / "secret.npz"
    secret.write_text("test labels")
    (output / "labels.npz").symlink_to(secret)
    (output / "all").symlink_to(tmp_path)
    os.mkfifo(output / "pipe")
    signal.alarm(60)  # a read of the FIFO would block: fail, not hang
    try:
        result = task_folder_result([], Runner(), tmp_path, None, shared=False)  # type: ignore[arg-type]
    finally:
        signal.alarm(0)
    bundle = zipfile.ZipFile(io.BytesIO(result["archive"]))
    assert sorted(bundle.namelist()) == ["output/", "output/model.txt"]
    assert bundle.read("output/model.txt") == b"kept"


def test_a_task_folder_sent_back_holds_no_file_longer_than_the_limit(tmp_path: Path) -> None:
    """A task can make its log, or a file of its own in predictions/, as long as its file system
    allows (one sparse ftruncate, terabytes): zipping the folder back read all of it into
    memory, for hours. Past SHIP_OUTPUT_LIMIT the log sends its end, and another file stays."""

    class Runner:  # the one thing _result asks of the runner
        def task_dir(self, where: Path, task: Any) -> Path:
            return where / "task"

    task = tmp_path / "task"
    (task / "predictions").mkdir(parents=True)
    (task / "task.json").write_text("{}")
    (task / "predictions" / "test.npy").write_bytes(b"scores")
    longer = SHIP_OUTPUT_LIMIT + 1
    with open(task / "log.txt", "wb") as handle:
        handle.write(b"the adapter starts\n")
        handle.truncate(longer - len(b"the end\n"))
        handle.seek(0, os.SEEK_END)
        handle.write(b"the end\n")
    with open(task / "predictions" / "junk.bin", "wb") as handle:
        handle.truncate(longer)
    result = task_folder_result([], Runner(), tmp_path, None, shared=False)  # type: ignore[arg-type]
    bundle = zipfile.ZipFile(io.BytesIO(result["archive"]))
    assert sorted(bundle.namelist()) == [
        "log.txt",
        "predictions/",
        "predictions/test.npy",
        "task.json",
    ]
    assert bundle.getinfo("log.txt").file_size < SHIP_OUTPUT_LIMIT
    sent = bundle.read("log.txt").decode()
    assert sent.startswith("[... ") and sent.endswith("the end\n")
    assert bundle.read("predictions/test.npy") == b"scores"
