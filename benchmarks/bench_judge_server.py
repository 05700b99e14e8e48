"""Judge server throughput and latency: batched vs one pair per forward pass, 1/8/32 clients.

Builds a tiny random-init GPT-2 preference model (``lm_runs.tiny.build_tiny_lm``, nothing is
downloaded) in a temporary directory, starts ``python -m lm_runs.judge_server`` on 127.0.0.1 (a free
port) once per server mode, and runs closed-loop clients (each thread sends its next request as soon
as the previous one is answered) for ``--seconds`` per concurrency level. ``--judge SPEC`` serves
another judge instead (``lm_runs.judges.toy:prefer_shorter``, which answers at once, leaves only the
server's own cost). Besides pairs/s and latencies each row reports the server process's CPU time per
request (user + system, all threads, from ``/proc``), which other jobs on the machine disturb far
less than throughput; the server runs from the current directory's ``lm_runs`` (``-m`` puts it first).

    python benchmarks/bench_judge_server.py --json bench_judge_server.json

Modes: ``batched`` = ``--max-batch-size 64 --max-wait-ms 5``; ``greedy`` = ``--max-batch-size 64
--max-wait-ms 0`` (merges only what queued up during the previous forward pass, never idles);
``unbatched`` = ``--max-batch-size 1 --max-wait-ms 0`` (one pair per forward pass, one at a time).
"""

from __future__ import annotations

import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from egpo_core.cli import OneLineArgumentParser  # noqa: E402

MODES = {"batched": (64, 5.0), "greedy": (64, 0.0), "unbatched": (1, 0.0)}


def make_pairs(count: int, seed: int) -> tuple[list[str], list[list[str]]]:
    """Prompts of 3–12 words and responses of 5–20 words from the tiny corpus vocabulary."""
    from lm_runs.tiny import tiny_corpus

    words = " ".join(tiny_corpus(50, seed=seed)).split()
    rng = random.Random(seed)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi)))

    return [text(3, 12) for _ in range(count)], [[text(5, 20), text(5, 20)] for _ in range(count)]


def server_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far, all its threads (Linux ``/proc``; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(judge: str, max_batch_size: int, max_wait_ms: float, threads: int) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.pop("EGPO_JUDGE_TOKEN", None)
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "lm_runs.judge_server", "--judge", judge, "--port", "0",
            "--max-batch-size", str(max_batch_size), "--max-wait-ms", str(max_wait_ms), "--device", "cpu",
            "--log-level", "warning",
        ],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    line = proc.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"judge server did not start: {line!r}")
    url = match.group(1)
    import httpx

    for _ in range(400):
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"judge server at {url} never became healthy")


def run_clients(url: str, clients: int, seconds: float, pairs_per_request: int, seed: int) -> dict:
    """Closed-loop load: ``clients`` threads for ``seconds``; returns throughput and latency quantiles."""
    import httpx

    prompts, completions = make_pairs(512, seed)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start_barrier = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def worker(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        with httpx.Client(base_url=url, timeout=60) as session:
            session.get("/health")  # open the connection before timing
            start_barrier.wait()
            while time.perf_counter() < stop_at[0]:
                rows = [rng.randrange(len(prompts)) for _ in range(pairs_per_request)]
                payload = {"prompts": [prompts[r] for r in rows], "completions": [completions[r] for r in rows]}
                t0 = time.perf_counter()
                response = session.post("/v1/classifications", json=payload)
                elapsed = time.perf_counter() - t0
                if response.status_code == 200 and len(response.json()["results"]) == pairs_per_request:
                    latencies[index].append(elapsed)
                else:
                    errors[index] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + seconds + 1e9  # placeholder until everyone is connected
    start_barrier.wait()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    flat = np.array([x for part in latencies for x in part])
    requests = int(flat.size)
    return {
        "clients": clients,
        "pairs_per_request": pairs_per_request,
        "requests": requests,
        "errors": int(sum(errors)),
        "seconds": wall,
        "pairs_per_s": requests * pairs_per_request / wall,
        "p50_ms": float(np.percentile(flat, 50) * 1e3) if requests else float("nan"),
        "p90_ms": float(np.percentile(flat, 90) * 1e3) if requests else float("nan"),
        "p99_ms": float(np.percentile(flat, 99) * 1e3) if requests else float("nan"),
    }


def batch_stats(url: str) -> dict:
    """Mean pairs per judge call so far, from the server's /metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    values = {}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for s in family.samples:
            if s.name in ("egpo_judge_batch_size_sum", "egpo_judge_batch_size_count"):
                values[s.name] = s.value
    count = values.get("egpo_judge_batch_size_count", 0.0)
    return {"judge_calls": count, "pairs": values.get("egpo_judge_batch_size_sum", 0.0)}


def main(argv: list[str] | None = None) -> None:
    parser = OneLineArgumentParser(prog="bench_judge_server.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per (mode, clients)")
    parser.add_argument("--pairs-per-request", type=int, default=1)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--server-threads", type=int, default=1, help="OMP/torch threads of the server process")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--judge", default=None, help="judge spec to serve (default: the tiny preference model built here)")
    parser.add_argument("--json", type=Path, default=None, help="write the rows and settings here")
    args = parser.parse_args(argv)
    for flag, value in (("--clients", min(args.clients)), ("--pairs-per-request", args.pairs_per_request),
                        ("--server-threads", args.server_threads)):
        if value < 1:
            parser.error(f"{flag} must be at least 1, got {value}")
    if not args.seconds > 0:
        parser.error(f"--seconds must be > 0, got {args.seconds}")
    if args.json is not None and args.json.is_dir():
        parser.error(f"--json {args.json} is a folder; give a file name")

    from lm_runs.tiny import build_tiny_lm

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        judge = args.judge or str(build_tiny_lm(Path(tmp) / "tiny_pm", num_labels=2))
        for mode in args.modes:
            max_batch_size, max_wait_ms = MODES[mode]
            proc, url = start_server(judge, max_batch_size, max_wait_ms, args.server_threads)
            try:
                run_clients(url, 2, 1.0, args.pairs_per_request, args.seed)  # warm-up, not reported
                for clients in args.clients:
                    before, cpu_before = batch_stats(url), server_cpu_seconds(proc.pid)
                    row = run_clients(url, clients, args.seconds, args.pairs_per_request, args.seed)
                    cpu_after, after = server_cpu_seconds(proc.pid), batch_stats(url)
                    calls = after["judge_calls"] - before["judge_calls"]
                    row.update(
                        mode=mode, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                        mean_batch=(after["pairs"] - before["pairs"]) / calls if calls else float("nan"),
                        server_cpu_ms_per_request=(cpu_after - cpu_before) * 1e3 / row["requests"] if row["requests"] else float("nan"),
                    )
                    rows.append(row)
                    print(
                        f"{mode:>9}  clients {clients:>3}  {row['pairs_per_s']:8.1f} pairs/s  "
                        f"p50 {row['p50_ms']:7.1f} ms  p90 {row['p90_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  "
                        f"mean batch {row['mean_batch']:5.1f}  server CPU {row['server_cpu_ms_per_request']:5.2f} ms/request  "
                        f"({row['requests']} requests, {row['errors']} errors)",
                        flush=True,
                    )
            finally:
                proc.terminate()
                proc.wait(timeout=30)

    print()
    print("| mode | clients | pairs/s | p50 ms | p90 ms | p99 ms | mean pairs per forward | server CPU ms/request |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['clients']} | {r['pairs_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['mean_batch']:.1f} | {r['server_cpu_ms_per_request']:.2f} |"
        )
    if args.json:
        settings = {
            "seconds": args.seconds, "pairs_per_request": args.pairs_per_request, "server_threads": args.server_threads,
            "judge": args.judge or "tiny preference model",
            "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
        }
        args.json.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
