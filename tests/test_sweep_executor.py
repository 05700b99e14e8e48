"""sweep(..., executor=, chunk_size=, partial_dir=): chunks computed elsewhere give the single-process
sweep's arrays bit for bit; a failing chunk is retried once, then reported with its settings; finished
chunks are kept and a rerun computes only the missing ones."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import subprocess
import sys

import numpy as np
import pytest

from egpo_core import sweep
from egpo_core.executors import Chunk, ChunksFailed, plan_chunks

RNG = np.random.default_rng(7)
N, RUNS = 4, 3
_A = RNG.uniform(size=(RUNS, N, N))
P = np.triu(_A, 1) + np.tril(1 - np.swapaxes(_A, 1, 2), -1) + 0.5 * np.eye(N)
REF = RNG.normal(size=(RUNS, N))
# sampled gradients: the random streams must be keyed by the setting's index in the whole grid
GRID = dict(algorithms=["oipo1", "nash_md", "egpo"], gradient="sampled", num_samples=20, iterations=60,
            betas=[0.1, 0.05], lrs=[0.02, 0.05], seeds=[0, 3], metrics=["duality_gap", "average_duality_gap"],
            progress=False)


@pytest.fixture(scope="module")
def plain():
    return sweep(P, REF, **GRID)


def assert_same(result, expected) -> None:
    assert result.algorithms == expected.algorithms
    assert result.configs.equals(expected.configs)
    assert np.array_equal(result.steps, expected.steps)
    assert result.values.keys() == expected.values.keys()
    for name, data in expected.values.items():
        assert np.array_equal(result.values[name], data, equal_nan=True), name
    assert np.isfinite(expected.values["duality_gap"]).all()  # the comparison is between numbers


class Injecting(concurrent.futures.Executor):
    """Computes each chunk in ``submit`` (here, synchronously), raising for the chunks in ``failures``
    (chunk → how many times); records every chunk submitted."""

    def __init__(self, failures: dict[Chunk, int] | None = None):
        self.failures = dict(failures or {})
        self.submitted: list[Chunk] = []

    def submit(self, fn, /, *args, **kwargs):
        future = concurrent.futures.Future()
        chunk = args[1]
        self.submitted.append(chunk)
        if self.failures.get(chunk, 0) > 0:
            self.failures[chunk] -= 1
            future.set_exception(RuntimeError(f"injected failure\nof {chunk}"))
        else:
            future.set_result(fn(*args, **kwargs))
        return future


def test_plan_chunks_covers_the_grid_once_in_rectangles() -> None:
    for n_cfg, n_alg, size in [(8, 3, 1), (8, 3, 2), (8, 3, 3), (8, 3, 7), (5, 3, 100), (1, 1, 1)]:
        seen = np.zeros((n_cfg, n_alg), dtype=int)
        for chunk in plan_chunks(n_cfg, n_alg, size):
            block = seen[slice(*chunk.configs), slice(*chunk.algorithms)]
            assert 0 < block.size <= size
            block += 1
        assert (seen == 1).all(), (n_cfg, n_alg, size)


def _processes() -> concurrent.futures.Executor:
    # spawn: a forked child of a process whose OpenMP threads ran may hang in its first parallel region
    return concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn"))


@pytest.mark.parametrize("make_pool", [lambda: concurrent.futures.ThreadPoolExecutor(max_workers=2),
                                       pytest.param(_processes, marks=pytest.mark.slow)],  # ~13 s: spawned imports
                         ids=["threads", "processes"])
def test_pool_executors_give_the_plain_sweep_bit_for_bit(plain, make_pool) -> None:
    # chunk_size 2 < 3 algorithms: chunks cut settings between algorithms
    with make_pool() as pool:
        assert_same(sweep(P, REF, executor=pool, chunk_size=2, **GRID), plain)


@pytest.mark.parametrize("mode", [
    dict(policy="neural", hidden_dim=5, depth=2, gradient="exact"),  # one random network, from the first seed
    dict(conventions="reference", gradient="sampled", algorithms=["nash_md", "oipo2"]),  # runs coupled
])
def test_chunks_in_process_equal_the_plain_sweep_in_every_mode(mode) -> None:
    grid = {**GRID, "iterations": 30, **mode}
    assert_same(sweep(P, REF, chunk_size=1, **grid), sweep(P, REF, **grid))


def test_a_failing_chunk_is_retried_once(plain) -> None:
    chunks = plan_chunks(8, 3, 3)
    executor = Injecting({chunks[2]: 1})
    assert_same(sweep(P, REF, executor=executor, chunk_size=3, **GRID), plain)
    assert len(executor.submitted) == len(chunks) + 1 and executor.submitted.count(chunks[2]) == 2


def test_a_chunk_failing_twice_is_reported_in_one_line_with_its_settings(tmp_path) -> None:
    chunks = plan_chunks(8, 3, 1)
    bad = chunks[3 * 5 + 1]  # setting 5 (beta=0.05, lr=0.02, seed=3) x nash_md
    executor = Injecting({bad: 2})
    with pytest.raises(ChunksFailed) as failed:
        sweep(P, REF, executor=executor, chunk_size=1, **GRID)
    message = str(failed.value)
    assert "\n" not in message
    assert "beta=0.05 lr=0.02 seed=3] x nash_md failed twice: RuntimeError: injected failure of" in message
    assert executor.submitted.count(bad) == 2 and len(executor.submitted) == len(chunks) + 1


def test_finished_chunks_are_kept_and_a_rerun_computes_only_the_missing_one(plain, tmp_path) -> None:
    chunks = plan_chunks(8, 3, 3)
    with pytest.raises(ChunksFailed, match=f"kept in {tmp_path}"):
        sweep(P, REF, executor=Injecting({chunks[5]: 2}), chunk_size=3, partial_dir=tmp_path, **GRID)
    [folder] = tmp_path.iterdir()
    assert sorted(p.name for p in folder.iterdir()) == sorted(c.file_name for c in chunks if c != chunks[5])
    rerun = Injecting()
    assert_same(sweep(P, REF, executor=rerun, chunk_size=3, partial_dir=tmp_path, **GRID), plain)
    assert rerun.submitted == [chunks[5]]
    again = Injecting()  # everything is there now: nothing computed
    assert_same(sweep(P, REF, executor=again, chunk_size=3, partial_dir=tmp_path, **GRID), plain)
    assert again.submitted == []
    other = Injecting()  # another sweep (another seed list) has another key: computed whole
    sweep(P, REF, executor=other, chunk_size=3, partial_dir=tmp_path, **{**GRID, "seeds": [0, 4]})
    assert len(other.submitted) == len(chunks)


def test_bad_executor_and_chunk_size_are_refused_before_computing() -> None:
    with pytest.raises(ValueError, match="executor must be a concurrent.futures.Executor or a dask.distributed.Client, got str"):
        sweep(P, REF, executor="tcp://here:8786", **GRID)
    with pytest.raises(ValueError, match="chunk_size must be at least 1, got chunk_size=0"):
        sweep(P, REF, chunk_size=0, **GRID)
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as forking:
        with pytest.raises(ValueError, match=r"a ProcessPoolExecutor that forks cannot run the kernel .* "
                                             r"mp_context=multiprocessing.get_context\('spawn'\)"):
            sweep(P, REF, executor=forking, **GRID)


def test_importing_egpo_core_does_not_import_dask() -> None:
    code = "import sys, egpo_core, egpo_core.simulator, egpo_core.executors, egpo_core.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        yield client


@pytest.mark.parametrize("chunk_size", [1, 4])
def test_a_local_dask_cluster_gives_the_plain_sweep_bit_for_bit(plain, client, chunk_size) -> None:
    assert_same(sweep(P, REF, executor=client, chunk_size=chunk_size, **GRID), plain)


# ------------------------------------------------------------------- benchmarks/bench_sweep_workers.py


def _bench_sweep_workers():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_sweep_workers.py"
    spec = importlib.util.spec_from_file_location("bench_sweep_workers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_sweep_workers_help_and_refusals(capsys):
    bench = _bench_sweep_workers()
    with pytest.raises(SystemExit) as done:
        bench.main(["--help"])
    assert done.value.code == 0 and "--chunk-sizes" in capsys.readouterr().out
    for argv, named in ((["--workers", "0"], "--workers"), (["--iterations", "0"], "--iterations"),
                        (["--work", "2"], "--work")):  # abbreviations are refused like everywhere else
        with pytest.raises(SystemExit) as done:
            bench.main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert done.value.code == 2 and named in err[-1], err
