"""Per-slide stages on Dask: the same outputs and failures as locally, and surviving a killed
worker (a real ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from features.params import ExtractParams
from tiling.params import TilingParams
from wsi_mil.config.executor import ClusterParams, ExecutorParams
from wsi_mil.executors import ExecutorError, run_jobs, slurm_cluster
from wsi_mil.pipeline.batch import SlideJob, run_batch
from wsi_mil.pipeline.extract import extract_slides
from wsi_mil.pipeline.tile import tile_slides
from wsi_mil.synthetic.pyramid_tiff import write_pyramidal_tiff

# 512 px slides at 0.5 µm/px with 64 px tiles at 1 µm/px: a handful of tiles each, so that
# extraction with efficientnet_lite0 on a CPU takes about a second per slide.
TILING = TilingParams(target_mpp=1.0, tile_size=64)
EXTRACT = ExtractParams(progress=False)
VOLATILE_ATTRS = {"created"}  # the time a file was written


def _render(seed: int):
    rng = np.random.default_rng(seed)
    cx, cy = rng.integers(180, 330, size=2)
    radius = int(rng.integers(110, 160))

    def render(x: int, y: int, w: int, h: int) -> np.ndarray:
        yy, xx = np.mgrid[y : y + h, x : x + w]
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 < radius**2
        texture = ((xx // 7 + yy // 5 + seed) % 3 * 25).astype(np.uint8)
        image = np.full((h, w, 3), 245, np.uint8)
        image[inside] = np.stack([200 - texture, 90 + texture, 170 - texture], -1)[inside]
        return image

    return render


def make_slides(folder: Path, n: int, bad: bool = False) -> Path:
    """``n`` small tissue slides (and one unreadable ``bad.tif`` when asked) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_pyramidal_tiff(folder / f"s{i:02d}.tif", 512, 512, 0.5, _render(i), tile=256)
    if bad:
        (folder / "bad.tif").write_bytes(b"not a TIFF at all")
    return folder


def tiles_content(tiles_dir: Path) -> dict[str, tuple[list, dict]]:
    out = {}
    for path in sorted(tiles_dir.glob("*.h5")):
        with h5py.File(path, "r") as f:
            attrs = {k: f.attrs[k] for k in f.attrs if k not in VOLATILE_ATTRS}
            out[path.name] = (f["coords"][:].tolist(), {k: str(v) for k, v in attrs.items()})
    return out


def features_of(bag_dir: Path) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted(bag_dir.glob("*.h5")):
        with h5py.File(path, "r") as f:
            out[path.stem] = f["features"][:].astype(np.float32)
    return out


def assert_same_features(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for name, features in a.items():  # float16 storage: a relative step of 2^-10
        np.testing.assert_allclose(features, b[name], rtol=2e-3, atol=2e-3, err_msg=name)


def leftover_tmp(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob("*.tmp")]


# --------------------------------------------------------------------------- parameters


def test_executor_params_are_checked():
    with pytest.raises(ValueError, match="kind"):
        ExecutorParams(kind="ray")
    with pytest.raises(ValueError, match="need kind: dask"):
        ExecutorParams(address="tcp://127.0.0.1:8786")
    with pytest.raises(ValueError, match="not both"):
        ExecutorParams(kind="dask", address="tcp://h:8786", cluster=ClusterParams())
    with pytest.raises(ValueError, match="scheduler address"):
        ExecutorParams(kind="dask", address="127.0.0.1")
    with pytest.raises(ValueError, match="processes"):
        ClusterParams(kind="slurm", cores=2, processes=4)


def test_the_executor_section_of_a_config(tmp_path):
    from wsi_mil.config.pipeline import parse_config
    from wsi_mil.config.schema import ConfigError

    base = {"out": str(tmp_path), "labels": "labels.csv", "slides": {"inputs": ["s/"]}}
    config = parse_config(
        {
            **base,
            "executor": {
                "kind": "dask",
                "cluster": {
                    "kind": "slurm",
                    "queue": "gpu",
                    "jobs": 8,
                    "gpus": 1,
                    "job_script_prologue": ["module load cuda"],
                },
            },
        }
    )
    assert config.executor == ExecutorParams(
        kind="dask",
        cluster=ClusterParams(
            kind="slurm", queue="gpu", jobs=8, gpus=1, job_script_prologue=("module load cuda",)
        ),
    )
    assert parse_config(base).executor == ExecutorParams()  # local unless asked
    with pytest.raises(ConfigError, match=r"executor\.cluster\.queu: unknown key.*'queue'"):
        parse_config({**base, "executor": {"kind": "dask", "cluster": {"queu": "gpu"}}})


def test_slurm_config_builds_the_expected_job_script():
    """The ``cluster: {kind: slurm, ...}`` section as dask-jobqueue writes it (no SLURM here)."""
    params = ClusterParams(
        kind="slurm",
        queue="gpu",
        account="pathology",
        cores=8,
        processes=1,
        memory="32GB",
        walltime="02:30:00",
        jobs=4,
        gpus=1,
        job_extra_directives=("--constraint=a100",),
        job_script_prologue=("module load cuda/12.1",),
        log_directory="/scratch/logs",
        dashboard_address="127.0.0.1:0",  # any free port, on loopback
    )
    import dask
    import dask_jobqueue  # noqa: F401 - loads the jobqueue config defaults

    # the user's scheduler options are kept, but the dashboard's address is the parameter's
    options = {"dashboard_address": ":8787", "idle_timeout": "3600s"}
    with dask.config.set({"jobqueue.slurm.scheduler-options": options}):
        cluster = slurm_cluster(params)
    try:
        script = cluster.job_script()
        assert_loopback_only(cluster)
        assert cluster.scheduler.idle_timeout == 3600
    finally:
        cluster.close()
    lines = script.splitlines()
    for expected in (
        "#SBATCH -p gpu",
        "#SBATCH -A pathology",
        "#SBATCH -n 1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH -t 02:30:00",
        "#SBATCH --constraint=a100",
        "#SBATCH --gres=gpu:1",
        "#SBATCH -e /scratch/logs/dask-worker-%J.err",
        "export DASK_DISTRIBUTED__WORKER__DAEMON=False",
        "module load cuda/12.1",
    ):
        assert expected in lines, f"{expected!r} not in\n{script}"
    assert any(line.startswith("#SBATCH --mem=") for line in lines)
    command = lines[-1]
    assert "distributed.cli.dask_worker" in command
    assert "--nthreads 8" in command and "--memory-limit" in command
    assert "--resources GPU=1" in command
    # the prologue runs before the worker starts
    assert lines.index("module load cuda/12.1") < len(lines) - 1


def test_a_job_needing_a_gpu_no_worker_offers_is_refused():
    """Dask would leave it waiting forever; the error says how to start GPU workers."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as cluster:
        executor = ExecutorParams(kind="dask", address=cluster.scheduler_address)
        jobs = [SlideJob("a", Path("a"), run=int, resources={"GPU": 1})]
        with pytest.raises(ExecutorError, match="--resources GPU=1"):
            list(run_jobs(jobs, _ok, stage="extract", executor=executor))


def test_extraction_on_cuda_asks_each_slide_for_a_gpu(tmp_path):
    """``device: cuda`` on a cluster: the client needs no GPU, the tasks need a GPU worker."""
    from distributed import LocalCluster

    (tmp_path / "tiles").mkdir()
    (tmp_path / "tiles" / "s00.h5").write_bytes(b"")  # never opened: refused before running
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as cluster:
        executor = ExecutorParams(kind="dask", address=cluster.scheduler_address)
        with pytest.raises(ExecutorError, match="offering GPU"):
            extract_slides(
                tmp_path / "tiles",
                out=tmp_path,
                params=ExtractParams(device="cuda"),
                executor=executor,
            )


def _ok(job: SlideJob) -> None:
    job.run()


def _slow(job: SlideJob) -> None:
    time.sleep(float(job.slide))


def test_stopping_the_iteration_cancels_the_jobs_not_run():
    """What Ctrl-C does to ``run_batch``: the jobs still queued are cancelled, not left."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        executor = ExecutorParams(kind="dask", address=cluster.scheduler_address)
        jobs = [SlideJob("0.01", Path("a"), run=int)] + [
            SlideJob("5", Path(f"b{i}"), run=int) for i in range(4)
        ]
        results = run_jobs(jobs, _slow, stage="wait", executor=executor)
        assert next(results)[0] is jobs[0]
        results.close()  # as a KeyboardInterrupt in the consumer does
        deadline = time.monotonic() + 10  # the 4 jobs of 5 s would take 20 s if not cancelled
        while any(client.processing().values()):
            assert time.monotonic() < deadline, "cancelled jobs still running"
            time.sleep(0.2)


# --------------------------------------------------------------------------- Dask vs local


@pytest.mark.slow
def assert_loopback_only(cluster) -> None:
    """The cluster's dashboard answers on loopback and not on this machine's network address."""
    import socket

    from distributed.utils import get_ip

    port = cluster.scheduler_info["services"]["dashboard"]
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    outward = get_ip()
    if not outward.startswith("127."):  # a machine with a network address
        with pytest.raises(OSError):
            socket.create_connection((outward, port), timeout=5).close()


def test_the_local_cluster_dashboard_listens_on_loopback_only():
    """A server of wsi-mil binds loopback by default; Dask's own default is every interface."""
    from distributed import Client

    from wsi_mil.executors import dashboard_link, start_cluster

    assert ClusterParams().dashboard_address.startswith("127.0.0.1:")
    cluster = start_cluster(ClusterParams(n_workers=1, dashboard_address="127.0.0.1:0"))
    try:
        assert_loopback_only(cluster)
        with Client(cluster) as client:
            port = cluster.scheduler_info["services"]["dashboard"]
            link = dashboard_link(client, "127.0.0.1:0")
        assert link.startswith(f"http://127.0.0.1:{port}/status (this machine only; ")
        assert f"ssh -L {port}:localhost:{port} " in link
    finally:
        cluster.close()


def test_local_cluster_gives_the_same_tiles_features_and_failures(tmp_path):
    slides = make_slides(tmp_path / "slides", 8, bad=True)
    local_out, dask_out = tmp_path / "local", tmp_path / "dask"
    executor = ExecutorParams(kind="dask", cluster=ClusterParams(n_workers=2, threads_per_worker=1))
    local_tiles = tile_slides([slides], out=local_out, params=TILING)
    dask_tiles = tile_slides([slides], out=dask_out, params=TILING, executor=executor)
    assert len(local_tiles.failed) == len(dask_tiles.failed) == 1
    assert sorted(dask_tiles.done) == sorted(local_tiles.done)
    assert tiles_content(local_out / "tiles") == tiles_content(dask_out / "tiles")
    assert (local_out / "failures.csv").read_text() == (dask_out / "failures.csv").read_text()

    (tmp_path / "local" / "tiles" / "s03.h5").write_bytes(b"")  # a broken tiles file
    (tmp_path / "dask" / "tiles" / "s03.h5").write_bytes(b"")
    extract_slides(local_out / "tiles", out=local_out, params=EXTRACT)
    dask_bags = extract_slides(dask_out / "tiles", out=dask_out, params=EXTRACT, executor=executor)
    assert len(dask_bags.done) == 7 and [s for s, _ in dask_bags.failed] == ["s03"]
    assert_same_features(
        features_of(local_out / "features" / "efficientnet_lite0"),
        features_of(dask_out / "features" / "efficientnet_lite0"),
    )
    local_failures = (local_out / "failures.csv").read_text()
    dask_failures = (dask_out / "failures.csv").read_text()
    assert local_failures.replace(str(local_out), "OUT") == dask_failures.replace(
        str(dask_out), "OUT"
    )
    assert not leftover_tmp(local_out, dask_out)


# --------------------------------------------------------------------------- a real cluster


class DaskProcesses:
    """``dask scheduler`` and ``dask worker`` processes, each in its own process group so that
    stopping one also stops what it started (its worker process, tile readers)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = self.folder / f"dask_{len(self.procs)}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_" + args[0], *args[1:]],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            try:  # whatever is left of the group (a worker a nanny restarted, readers)
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def tail(self) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
            for log in self.logs
            if log.exists()
        )


@pytest.fixture
def dask_cluster(tmp_path):
    """A scheduler and two single-threaded workers on 127.0.0.1, random ports; always stopped."""
    procs = DaskProcesses(tmp_path)
    scheduler_file = tmp_path / "scheduler.json"
    try:
        procs.start(
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(scheduler_file),
        )
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            assert time.monotonic() < deadline, "scheduler did not start\n" + procs.tail()
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        for _ in range(2):
            procs.start(
                "worker",
                address,
                "--nworkers",
                "1",
                "--nthreads",
                "1",
                "--host",
                "127.0.0.1",
                "--no-dashboard",
                "--death-timeout",
                "60",
            )
        yield address, procs
    finally:
        procs.stop()


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "wsi_mil", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"wsi-mil did not finish in {timeout} s:\n{output[-3000:]}")
    return proc.returncode, output


def _kill_a_busy_worker(address: str, stage: str, timeout: float) -> bool:
    """SIGKILL the worker process that holds a ``stage`` task; False if none did in time."""
    from distributed import Client

    with Client(address, timeout="20s") as client:
        pids = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = [
                worker
                for worker, keys in client.processing().items()
                if any(str(key).startswith(f"{stage}-") for key in keys)
            ]
            if busy:
                pids = pids or client.run(os.getpid)
                if busy[0] in pids:
                    os.kill(pids[busy[0]], signal.SIGKILL)
                    return True
                pids = None  # a worker joined since: ask again
            time.sleep(0.05)
    return False


@pytest.mark.slow
def test_a_real_cluster_survives_a_killed_worker(tmp_path, dask_cluster):
    address, procs = dask_cluster
    slides = make_slides(tmp_path / "slides", 12)
    out, features = tmp_path / "out", tmp_path / "features"
    tiling_flags = ["--target-mpp", "1", "--tile-size", "64"]
    dask_flags = ["--executor", "dask", "--scheduler", address]

    code, output = _finish(
        _cli("tile", str(slides), "--out", str(out), *tiling_flags, *dask_flags), 180
    )
    assert code == 0, output + procs.tail()
    assert "tile: 12 done" in output

    extract = _cli("extract", "--tiles", str(out / "tiles"), "--out", str(features), *dask_flags)
    killed = _kill_a_busy_worker(address, "extract", timeout=120)
    code, output = _finish(extract, 300)
    assert killed, "no worker was seen holding an extraction task\n" + output
    assert code == 0, output + procs.tail()
    assert "extract: 12 done, 0 skipped (complete), 0 failed" in output
    assert not (features / "failures.csv").exists()
    assert not leftover_tmp(out, features)

    # Every slide complete exactly once, and the same as a local run.
    bags = features / "efficientnet_lite0"
    assert sorted(p.name for p in bags.iterdir()) == [f"s{i:02d}.h5" for i in range(12)]
    local = tmp_path / "local"
    assert not tile_slides([slides], out=local, params=TILING).failed
    assert tiles_content(local / "tiles") == tiles_content(out / "tiles")
    assert not extract_slides(local / "tiles", out=local, params=EXTRACT).failed
    assert_same_features(features_of(local / "features" / "efficientnet_lite0"), features_of(bags))

    # A re-run resumes: nothing left to do.
    code, output = _finish(
        _cli("extract", "--tiles", str(out / "tiles"), "--out", str(features), *dask_flags), 120
    )
    assert code == 0 and "0 done, 12 skipped" in output, output


def test_run_batch_records_worker_exceptions_like_local_ones(tmp_path):
    """The error text of a slide that raised on a (thread) worker is the local one."""
    from distributed import LocalCluster

    def jobs():
        return [
            SlideJob("good", tmp_path / "good", run=int),
            SlideJob("bad", tmp_path / "bad", run=_raise),
        ]

    local = run_batch(jobs(), stage="x", failures_csv=tmp_path / "local.csv")
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as cluster:
        remote = run_batch(
            jobs(),
            stage="x",
            failures_csv=tmp_path / "dask.csv",
            executor=ExecutorParams(kind="dask", address=cluster.scheduler_address),
        )
    assert local.failed == remote.failed == [("bad", "ValueError: slide 'bad' is broken")]
    rows = list(csv.DictReader((tmp_path / "dask.csv").open()))
    assert rows == [{"slide": "bad", "stage": "x", "error": "ValueError: slide 'bad' is broken"}]


def _raise() -> None:
    raise ValueError("slide 'bad' is broken")


# --------------------------------------------------------------------------- parallel folds


@pytest.mark.slow
def test_parallel_folds_write_the_same_fold_files(tmp_path):
    """``train.parallel_folds``: folds as Dask tasks give the files of folds run in turn."""
    from wsi_mil.mil.params import TrainParams
    from wsi_mil.mil.train import train_folds
    from wsi_mil.synthetic.bags import planted_bags, write_planted_bags

    bags = planted_bags(18, (8, 12), 8, shift=4.0, seed=1)
    features_dir, labels_csv = write_planted_bags(tmp_path, bags)
    fast = {
        "hidden_dims": (16,),
        "attention_dim": 8,
        "device": "cpu",
        "bootstrap": 0,
        "folds": 2,
        "epochs": 2,
        "min_epochs": 1,
    }
    one = train_folds(features_dir, labels_csv, tmp_path / "one", TrainParams(**fast))
    two = train_folds(
        features_dir, labels_csv, tmp_path / "two", TrainParams(parallel_folds=2, **fast)
    )
    assert one["n_folds"] == two["n_folds"] == 2
    for k in range(2):
        names = sorted(p.name for p in (tmp_path / "one" / f"fold_{k}").iterdir())
        assert names == sorted(p.name for p in (tmp_path / "two" / f"fold_{k}").iterdir())
        a = json.loads((tmp_path / "one" / f"fold_{k}" / "training.json").read_text())
        b = json.loads((tmp_path / "two" / f"fold_{k}" / "training.json").read_text())
        assert a["test"]["slide_ids"] == b["test"]["slide_ids"]
        np.testing.assert_allclose(a["test"]["probs"], b["test"]["probs"], atol=1e-4)


@pytest.mark.slow
def test_map_ordered_runs_a_closure_on_dask_and_raises_its_error_here():
    """Training's folds go through map_ordered: results in order, a fold's exception here."""
    from wsi_mil.executors import map_ordered

    executor = ExecutorParams(kind="dask", cluster=ClusterParams(n_workers=2, threads_per_worker=1))
    offset = 10  # a closure, as train_run's fold function is

    def fold(k: int) -> int:
        if k == 1:
            raise ValueError("fold 1 has no positive slide")
        return offset * k

    assert (
        map_ordered(fold, [0, 2], stage="t")
        == map_ordered(fold, [0, 2], stage="t", executor=executor)
        == [0, 20]
    )
    with pytest.raises(ValueError, match="fold 1 has no positive slide"):
        map_ordered(fold, [0, 1], stage="t", executor=executor)
