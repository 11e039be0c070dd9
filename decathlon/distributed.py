"""Run a decathlon on a Dask cluster: one Dask task per (adapter, dataset, seed).

The client (``python -m decathlon run --scheduler tcp://HOST:PORT``, or ``--workers N`` for a
local cluster) plans the run as usual and submits every pending task to the cluster with
:mod:`dask.distributed`. On a worker, :func:`run_task` rebuilds the runner from the run's
configuration, builds the adapter's environment there when it is missing, loads (or downloads and
verifies) the data from the configuration's data folder, and calls the same
:meth:`~decathlon.runner.Runner.execute` as a local run: the same budget-enforced subprocess, the
same scoring. Rows come back as tasks finish (``as_completed``) and the client alone records them
(``result.json``, then the leaderboard), so a task is written once.

The run folder need not be shared. A worker that sees the run's ``config.json`` (the same bytes)
writes the task's folder in place; one that does not runs the task in a staging folder under
``$DECATHLON_HOME`` and sends the folder back zipped (``output/`` only when it is under
:data:`SHIP_OUTPUT_LIMIT`, the other files up to as much together, a longer log by its end).
The budgets file and any dataset metadata file travel with the tasks. Plugins the client
registered outside the entry points are imported on the worker by module name, or loaded from
their file when that name is not importable there.

A worker that dies mid-task (killed, out of memory, machine lost) gives the task rows with status
``error`` and reason ``worker died ...``; with ``retries=N`` the task is run again up to N times
first. Attempts are counted in a Dask :class:`~distributed.Variable` on the scheduler, so this does
not depend on the scheduler's ``allowed-failures`` setting (when that one runs out first, the
client gets :class:`~distributed.KilledWorker` and writes the same row).

Resources: an adapter with ``uses_gpu`` (unless ``--device cpu``) asks for ``{"GPU": 1}``, so it
only lands on workers started with ``--resources GPU=1``; when some worker advertises ``CPU``, each
task also asks for ``{"CPU": n_jobs}``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import io
import logging
import os
import platform
import stat
import sys
import uuid
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import decathlon
from decathlon import environments, files, rundir
from decathlon.errors import DecathlonError
from decathlon.plugins import Registry, make_registry
from decathlon.runner import (
    BUNDLED,
    PlannedTask,
    RunConfig,
    Runner,
    UnknownSettingsError,
    failed_rows,
    gpu_names,
)

log = logging.getLogger(__name__)

#: The largest ``output/`` folder a worker without the shared run folder sends back (bytes),
#: and the most the task's other files send back together.
SHIP_OUTPUT_LIMIT = 256 * 2**20
#: How much of a task's log is sent back when the log is longer than what is left of that.
SHIP_LOG_TAIL = 2**20
#: Task states kept on the scheduler, one Variable per task: attempts and whether one is running.
_STATE_PREFIX = "decathlon-task-state"
NEW_STATE: dict[str, Any] = {"attempts": 0, "deaths": 0, "running": False, "worker": ""}
#: How long the client tries to reach a ``--scheduler`` before giving up (seconds).
CONNECT_TIMEOUT = 30


@dataclass(frozen=True)
class PluginRef:
    """How a worker finds a plugin registered outside the entry points: a module's name and file,
    or (for a plugin object that is no module) the object itself, pickled."""

    module: str | None = None
    path: str | None = None
    obj: Any = None


class DaskExecutor:
    """Runs a runner's pending tasks on a Dask cluster; pass it to ``Runner.run(executor=...)``.

    ``scheduler``: a scheduler address (``tcp://HOST:PORT``); or ``workers``: start a local
    cluster of that many single-threaded worker processes on 127.0.0.1 for the run. ``retries``:
    how many times a task whose worker died is run again before it becomes a ``worker died`` row
    (also passed to Dask as ``retries`` for tasks that raise). ``shared_run_dir``: ``None`` lets
    each worker look for the run's ``config.json``; ``True`` or ``False`` forces the choice.
    """

    def __init__(
        self,
        scheduler: str | None = None,
        *,
        workers: int | None = None,
        retries: int = 0,
        shared_run_dir: bool | None = None,
    ) -> None:
        if (scheduler is None) == (workers is None):
            raise DecathlonError("give either a scheduler address or a number of local workers")
        if workers is not None and workers < 1:
            raise DecathlonError(f"--workers must be at least 1, got {workers}")
        if retries < 0:
            raise DecathlonError(f"--retries must be 0 or more, got {retries}")
        if scheduler is not None:
            _check_address(scheduler)
            self._client(scheduler).close()  # reached now, before the run folder is written
        self.scheduler = scheduler
        self.workers = workers
        self.retries = retries
        self.shared_run_dir = shared_run_dir

    def describe(self) -> str:
        if self.scheduler:
            return f"the Dask scheduler at {self.scheduler}"
        return f"a local Dask cluster of {self.workers} worker processes"

    # ------------------------------------------------------------------ client side

    @staticmethod
    def _client(scheduler: str) -> Any:
        """A client of the scheduler at ``scheduler``, or one line on why it cannot be reached."""
        from distributed import Client

        if not log.isEnabledFor(logging.INFO):  # Dask's own INFO lines only with --verbose
            logging.getLogger("distributed").setLevel(logging.WARNING)
        try:
            return Client(scheduler, timeout=f"{CONNECT_TIMEOUT}s")
        except OSError as exc:
            raise DecathlonError(
                f"cannot reach the Dask scheduler at {scheduler} ({exc}); start one with"
                " `dask scheduler` and pass the address it prints"
            ) from None

    def _connect(self) -> tuple[Any, Any]:
        from distributed import Client, LocalCluster

        if self.scheduler:
            return self._client(self.scheduler), None
        if not log.isEnabledFor(logging.INFO):  # Dask's own INFO lines only with --verbose
            logging.getLogger("distributed").setLevel(logging.WARNING)
        gpus = len(gpu_names())
        with warnings.catch_warnings():  # the scheduler's HTTP server falls back to a free port
            warnings.filterwarnings("ignore", message="Port .* is already in use")
            cluster = self._local_cluster(LocalCluster, gpus)
        return Client(cluster), cluster

    def _local_cluster(self, factory: Any, gpus: int) -> Any:
        from distributed.security import Security

        return factory(
            n_workers=self.workers,
            processes=True,
            threads_per_worker=1,
            host="127.0.0.1",
            # TLS with a certificate made for this cluster, held in memory only: a task (which
            # may reach the loopback when the network is on) cannot submit work to the
            # scheduler, which its unsealed workers would run with the harness's view.
            protocol="tls://",
            security=Security.temporary(),
            dashboard_address=None,
            preload=["decathlon.distributed"],  # import the harness before the first task
            # A local GPU is shared by the local workers: use --workers 1 per GPU for GPU adapters.
            resources={"GPU": 1} if gpus else None,
        )

    def resources(self, runner: Runner, worker_resources: Sequence[dict[str, float]]) -> dict:
        """What each task of this run asks the cluster for (Dask worker resources)."""
        wanted: dict[str, float] = {}
        if runner.adapter.uses_gpu and runner.config.device != "cpu":
            wanted["GPU"] = 1
        if any("CPU" in r for r in worker_resources):
            wanted["CPU"] = max(1, runner.config.n_jobs)
        return wanted

    def run(self, runner: Runner, run_dir: Path, tasks: Sequence[PlannedTask]) -> None:
        """Submit ``tasks``, record each one's rows with ``runner.finish_task`` as it finishes."""
        from distributed import KilledWorker, Variable, as_completed

        if not tasks:
            return
        run_dir = run_dir.resolve()
        client, cluster = self._connect()
        futures: dict[Any, PlannedTask] = {}
        try:
            info = client.scheduler_info()
            worker_resources = [w.get("resources") or {} for w in info["workers"].values()]
            wanted = self.resources(runner, worker_resources)
            self._warn_unplaceable(runner, wanted, worker_resources)
            runner.reporter.message(
                f"submitting {len(tasks)} tasks to {self.describe()}"
                f" ({len(worker_resources)} workers now)"
                + (f", each asking for {wanted}" if wanted else "")
            )
            payload = {
                "config": worker_config(runner),
                "files": shipped_files(runner),
                "plugins": plugin_refs(runner.registry),
                "entry_points": bool(runner.registry.pm.list_plugin_distinfo()),
                "run_dir": str(run_dir),
                "retries": self.retries,
                "shared_run_dir": self.shared_run_dir,
                "config_sha256": _sha256(rundir.config_path(run_dir)),
            }
            token = uuid.uuid4().hex[:12]
            for task in tasks:
                key = f"decathlon-{runner.adapter.name}-{task.dataset.flag}-seed{task.seed}-{token}"
                state_name = f"{_STATE_PREFIX}-{key}"
                Variable(state_name, client=client).set(dict(NEW_STATE))
                future = client.submit(
                    run_task,
                    payload,
                    task,
                    state_name,
                    key=key,
                    pure=False,
                    retries=self.retries,
                    resources=wanted or None,
                )
                futures[future] = task
            for future in as_completed(list(futures)):
                task = futures[future]
                try:
                    result = future.result()
                    rows = result["rows"]
                    if result.get("archive"):
                        _unpack(result["archive"], runner.task_dir(run_dir, task))
                    if result.get("kept_on"):
                        runner.reporter.message(f"{task.key}: output/ kept on {result['kept_on']}")
                except KilledWorker as exc:  # the scheduler's allowed-failures ran out first
                    last = getattr(getattr(exc, "last_worker", None), "address", "a worker")
                    tries = getattr(exc, "allowed_failures", 0) + 1
                    rows = failed_rows(
                        runner.base_row(run_dir, task),
                        "error",
                        f"worker died: {last} was lost while running the task ({tries} workers"
                        " tried; the scheduler's allowed-failures ran out)",
                    )
                except Exception as exc:  # a failure on the worker outside the task: still a row
                    log.warning("%s failed on the cluster: %r", task.key, exc)
                    rows = failed_rows(
                        runner.base_row(run_dir, task),
                        "error",
                        f"on the Dask worker: {type(exc).__name__}: {exc}",
                    )
                runner.finish_task(run_dir, task, rows)
                _forget_state(client, f"{_STATE_PREFIX}-{future.key}")
                del futures[future]
        finally:
            # Interrupted: what still runs on a worker is cancelled (its subprocess runs on to
            # its hard limit there); `--resume` reruns those tasks.
            if futures:
                client.cancel(list(futures))
                for future in futures:
                    _forget_state(client, f"{_STATE_PREFIX}-{future.key}")
            client.close()
            if cluster is not None:
                cluster.close()

    def _warn_unplaceable(
        self, runner: Runner, wanted: dict[str, float], worker_resources: Sequence[dict]
    ) -> None:
        if not worker_resources:
            runner.reporter.message(
                "no Dask worker is connected yet; tasks wait until one joins"
                " (`dask worker SCHEDULER --nworkers 1 --nthreads 1`)"
            )
            return
        for name, amount in wanted.items():
            best = max((r.get(name, 0) for r in worker_resources), default=0)
            if best < amount:
                hint = (
                    "start GPU workers with `--resources GPU=1`, or pass --device cpu"
                    if name == "GPU"
                    else f"start workers with `--resources CPU={amount:g}` or pass a smaller --jobs"
                )
                runner.reporter.message(
                    f"no Dask worker offers {name}={amount:g} (largest: {best:g}); tasks wait"
                    f" until one joins: {hint}"
                )


def _check_address(scheduler: str) -> None:
    """Refuse, before the run folder is written, a scheduler address Dask cannot connect to:
    a malformed one, or ``tls://`` without Dask's TLS settings (both were tracebacks)."""
    from distributed.comm.addressing import get_address_host_port, parse_address
    from distributed.security import Security

    try:
        scheme = parse_address(scheduler)[0]
        get_address_host_port(scheduler)
    except ValueError as exc:
        raise DecathlonError(
            f"--scheduler {scheduler}: not a Dask scheduler address ({exc}); pass the address"
            " `dask scheduler` prints, such as tls://HOST:8786"
        ) from None
    if scheme == "tls" and Security().get_connection_args("client")["ssl_context"] is None:
        raise DecathlonError(
            f"--scheduler {scheduler}: a tls:// scheduler needs Dask's TLS settings"
            " (distributed.comm.tls.ca-file, .client.cert and .client.key in the Dask"
            " configuration), and none are set"
        )


def worker_config(runner: Runner) -> dict[str, Any]:
    """The run's configuration as a worker gets it: the data folder made absolute (a worker
    resolves a relative one against its own working directory), or none where the run did not
    name one (``$DECATHLON_DATA_DIR`` or the default: each worker uses its own folder)."""
    config = runner.config.to_json()
    if not runner.config.data_dir_given:
        config["data_dir"] = config["data_dir_from"] = None
    elif config.get("data_dir"):
        config["data_dir"] = str(Path(config["data_dir"]).expanduser().resolve())
    return config


def shipped_files(runner: Runner) -> dict[str, str]:
    """The budgets file and any dataset metadata file the client read, by their RunConfig field:
    a worker uses these texts, not whatever files sit at those paths on its machine."""
    files = {"budgets_path": Path(runner.budgets.path).read_text(encoding="utf-8")}
    info = runner.config.info_path  # the bundled file: a worker reads its own copy
    if info and runner.config.info_from != BUNDLED:
        files["info_path"] = Path(info).expanduser().read_text(encoding="utf-8")
    return files


def plugin_refs(registry: Registry) -> list[PluginRef]:
    """The plugins of ``registry`` that did not come from the entry points, as workers find them."""
    from_entry_points = {id(plugin) for plugin, _ in registry.pm.list_plugin_distinfo()}
    refs = []
    for plugin in registry.pm.get_plugins():
        if id(plugin) in from_entry_points:
            continue
        if isinstance(plugin, ModuleType):
            # No __file__ (a module made in memory, a namespace package): workers import it by
            # name, or say in one line that they cannot.
            path = getattr(plugin, "__file__", None)
            where = str(Path(path).resolve()) if path else None
            refs.append(PluginRef(module=plugin.__name__, path=where))
        else:
            refs.append(PluginRef(obj=plugin))
    return refs


def _forget_state(client: Any, name: str) -> None:
    from distributed import Variable

    try:
        Variable(name, client=client).delete()
    except Exception:  # the scheduler may be gone; the state is only bookkeeping
        log.debug("could not delete %s", name, exc_info=True)


def _unpack(archive: bytes, task_dir: Path) -> None:
    if task_dir.exists():
        rundir.clear_task_dir(task_dir)  # earlier attempts (--retry-failed) stay
    task_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(archive)) as bundle:
        bundle.extractall(task_dir)


# ---------------------------------------------------------------------- worker side


def _import_plugin(ref: PluginRef) -> Any:
    """The plugin module of ``ref``: imported by name when that finds the same file, else loaded
    from its file under its name (a test module, a script's folder not on the worker's path)."""
    if ref.obj is not None:
        return ref.obj
    assert ref.module is not None
    module = sys.modules.get(ref.module)
    if module is None:
        try:
            module = importlib.import_module(ref.module)
        except ImportError:
            module = None
    found = getattr(module, "__file__", None) if module is not None else None
    same = ref.path is None or (found is not None and Path(found).resolve() == Path(ref.path))
    if module is not None and same:
        return module
    if ref.path is None or not Path(ref.path).is_file():
        raise DecathlonError(
            f"plugin module '{ref.module}' is not importable on this worker"
            + (f" and {ref.path} is not there" if ref.path else "")
        )
    spec = importlib.util.spec_from_file_location(ref.module, ref.path)
    if spec is None or spec.loader is None:
        raise DecathlonError(f"cannot load plugin module '{ref.module}' from {ref.path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[ref.module] = module
    spec.loader.exec_module(module)
    return module


def _worker_runner(payload: dict[str, Any]) -> Runner:
    plugins = [_import_plugin(ref) for ref in payload["plugins"]]
    registry = make_registry(plugins, entry_points=payload["entry_points"])
    config = dict(payload["config"])
    for key, text in payload["files"].items():
        config[key] = str(_cached_file(key, text))
    try:
        return Runner(RunConfig.from_json(config), registry)
    except UnknownSettingsError as exc:  # this worker's decathlon is older than the client's
        raise DecathlonError(
            f"the client's run configuration was {exc}; give the Dask workers the client's"
            f" decathlon (this worker has {decathlon.__version__})"
        ) from None


def _cached_file(key: str, text: str) -> Path:
    """The client's budgets or metadata file, written once on this worker under its hash."""
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    suffix = ".toml" if key == "budgets_path" else ".json"
    path = environments.home() / "dask-runs" / "files" / f"{digest}{suffix}"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_text(path, text)
    return path


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return f"{get_worker().address} on {platform.node()}"
    except ValueError:
        return platform.node()


def run_task(payload: dict[str, Any], task: PlannedTask, state_name: str) -> dict[str, Any]:
    """Run one task on a Dask worker; what :meth:`DaskExecutor.run` submits.

    Returns ``{"rows": [...], "archive": bytes | None, "kept_on": str | None}``: the archive is
    the zipped task folder when the run folder is not shared with the client.
    """
    from distributed import Variable

    runner = _worker_runner(payload)
    run_dir = Path(payload["run_dir"])
    shared = payload["shared_run_dir"]
    if shared is None:  # the client's run folder, if this worker sees the same one
        shared = _sha256(rundir.config_path(run_dir)) == payload["config_sha256"]
    where = run_dir if shared else _staging_dir(run_dir)
    state_var = Variable(state_name)
    state = state_var.get(timeout=60)
    me = _worker_name()
    if state["running"]:  # the previous attempt's worker died mid-task
        state["deaths"] += 1
        _kill_leftovers(runner, where, task)
        if state["deaths"] > payload["retries"]:
            state["running"] = False
            state_var.set(state)
            tries = f" ({state['attempts']} attempts)" if state["attempts"] > 1 else ""
            rows = failed_rows(
                runner.base_row(where, task),
                "error",
                f"worker died: {state['worker']} was lost while running the task{tries}",
            )
            return _result(rows, runner, where, task, shared)
        log.warning("%s: retrying after its worker %s died", task.key, state["worker"])
    state.update(attempts=state["attempts"] + 1, running=True, worker=me)
    state_var.set(state)
    try:
        environments.build(runner.adapter, on_step=log.info)
        if not shared:
            rundir.tasks_dir(where).mkdir(parents=True, exist_ok=True)
        rows = runner.execute(where, task)
    except BaseException:
        state["running"] = False
        state_var.set(state)
        raise
    return _result(rows, runner, where, task, shared)


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _staging_dir(run_dir: Path) -> Path:
    digest = hashlib.sha256(str(run_dir).encode()).hexdigest()[:12]
    # Same folder name as the client's: it is the run id in rows and evaluator files.
    return environments.home() / "dask-runs" / digest / run_dir.name


def _kill_leftovers(runner: Runner, where: Path, task: PlannedTask) -> None:
    """Stop what a dead attempt left running on this machine (its worker outlived it), then
    remove its scratch folder and its private temporary folder, as the end of any task does."""
    task_dir = runner.task_dir(where, task)
    rundir.stop_leftovers(task_dir, runner.config.kill_grace)
    rundir.remove_tree(task_dir / rundir.SCRATCH)
    rundir.remove_recorded_tmp(task_dir)


def _result(
    rows: list[dict[str, Any]], runner: Runner, where: Path, task: PlannedTask, shared: bool
) -> dict[str, Any]:
    if shared:
        return {"rows": rows, "archive": None, "kept_on": None}
    task_dir = runner.task_dir(where, task)
    if not task_dir.is_dir():
        return {"rows": rows, "archive": None, "kept_on": None}
    output = task_dir / rundir.OUTPUT
    rundir.regain(task_dir)  # a folder the task made unreadable is listed too
    # Only plain files and folders travel: a link the task left would ship what it points at
    # (the data files the sandbox hid from it), and reading a FIFO would block for ever.
    shipped = [p for p in sorted(task_dir.rglob("*")) if _plain(p)]
    output_size = sum(
        p.lstat().st_size for p in shipped if p.is_relative_to(output) and not p.is_dir()
    )
    ship_output = output_size <= SHIP_OUTPUT_LIMIT
    # The task's other files travel up to SHIP_OUTPUT_LIMIT in all, the smallest first (the
    # harness's own): a task can make its log, or a file of its own in predictions/, as long as
    # its file system allows (sparse, terabytes), which zipping would read for hours into
    # memory. A log past that sends its end; any other such file stays behind.
    rest = SHIP_OUTPUT_LIMIT
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(shipped, key=lambda p: 0 if p.is_dir() else p.lstat().st_size):
            relative = path.relative_to(task_dir)
            in_output = relative.parts[0] == rundir.OUTPUT and len(relative.parts) > 1
            if in_output and not ship_output:
                continue
            if in_output or path.is_dir():
                bundle.write(path, relative.as_posix())  # folders too: an empty output/ stays
                continue
            size = path.lstat().st_size
            if size <= rest:
                rest -= size
                bundle.write(path, relative.as_posix())
            elif relative == Path(rundir.LOG):
                bundle.writestr(relative.as_posix(), files.tail_of(path, SHIP_LOG_TAIL))
            else:
                log.warning("%s holds %d bytes, more than is sent back; left out", path, size)
    kept_on = None
    if ship_output:
        rundir.remove_tree(task_dir)
    else:
        kept_on = f"{platform.node()}:{output} ({output_size / 2**20:.0f} MB)"
    return {"rows": rows, "archive": buffer.getvalue(), "kept_on": kept_on}


def _plain(path: Path) -> bool:
    """A regular file this process may read or a real folder, not a link (``rglob`` lists links
    but does not enter linked folders), a FIFO, a socket or a device."""
    try:
        mode = path.lstat().st_mode
    except OSError:
        return False
    return (stat.S_ISREG(mode) and os.access(path, os.R_OK)) or stat.S_ISDIR(mode)


def local_jobs(workers: int) -> int:
    """Cores per task on a local cluster of ``workers`` processes: this machine's, shared out."""
    return max(1, (os.cpu_count() or 1) // workers)
