"""Runs taken over from previous benchmark runs (``--reuse DIR …``) instead of being trained again.

A training run (algorithm, seed, variant) reads π_ref, the class game and the settings a run reads — not
the other seeds or algorithms of its invocation — and is deterministic on one machine with one code
version: trained again, it gives the same records to the last bit. So a run a previous benchmark folder
holds can be taken over, on three conditions, all checked:

* **the same settings** — every field of :class:`~.settings.BenchmarkSettings` but
  :data:`NOT_READ_BY_A_RUN` (which runs there are, and what is done after them) and the ``round_*`` fields
  is equal in the source's ``summary.json``. A source that differs, or lacks a field, is refused as a whole
  (one line naming the field), before anything is computed: results of two settings are never mixed. The
  ``round_*`` fields are read by the round methods' runs only: a source's round-method runs are taken only
  when its ``round_*`` fields all equal these (a source without them holds no round-method run), and a
  source whose ``round_*`` fields differ (another ``--round_eta``) still gives its online runs, which do not
  read them;
* **the same π_ref** — the sources' ``sft/model.safetensors`` are identical byte for byte, and equal to
  the one this invocation fine-tunes (:func:`check_reference`, right after the fine-tuning, the first
  stage: a π_ref built on another machine or library version stops the run);
* **the run complete in the source** — listed in its ``summary.json`` (``runs``), its records from update 0
  to the last update (the same evaluation points) in ``metrics*.csv`` and ``class_probs.csv``, and its folder with
  the final policy and whatever this invocation keeps of it (the epoch checkpoints of the first seed's
  summed online runs, which the win-rate tables evaluate; every checkpoint with ``keep_checkpoints``). A
  run that is not complete in any source is trained.

A run is taken from the first source, in the order given, that holds it. What is taken: its records,
class probabilities, folder (copied; checkpoints this invocation would not keep are left out) and its
wall seconds as its source recorded them (``summary.json`` ``runs``' ``seconds``; a source written before
runs carried their seconds: its mean per run of that algorithm and variant, ``seconds_per_run``).
``summary.json`` names every taken run's source (``runs``' ``reused_from``).

``--against DIR`` (:func:`load_against`, :func:`against_metrics`) reads a previous run the same way for
another purpose: its runs of this run's round methods, trained at another step η (``round_eta``, every other
setting a run reads equal, the same π_ref), join this run's verdicts under the names ``<method>@eta=<η>``.
A seed's two runs then start from the same π_ref, meet the same judge and the same sampling seed, and differ
in η alone, so the exact paired test of :mod:`.verdicts` compares the two step sizes seed by seed.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from .settings import BenchmarkSettings, at_eta, core_name, round_alg

__all__ = ["NOT_READ_BY_A_RUN", "Source", "ReusedRun", "load_sources", "load_against", "against_metrics", "reused_runs",
           "check_reference", "take_over"]

#: Settings that choose which runs there are, or what is done after them — not what a run computes.
NOT_READ_BY_A_RUN = ("seeds", "algorithms", "length_normalized_seeds", "keep_checkpoints", "sim_etas",
                     "eval_samples_per_prompt", "eval_bootstrap")
_REFERENCE = Path("sft") / "model.safetensors"
_VARIANTS = {False: "summed", True: "length_normalized"}


def _key(alg: str) -> str:
    """An algorithm's identity whatever the name it was given (``nashmd`` and ``nash_md`` alike)."""
    return round_alg(alg) or core_name(alg)


@dataclass(frozen=True)
class Source:
    """A previous benchmark folder usable for this invocation's settings: its path, ``summary.json`` and
    tidy records (``metrics`` with a ``variant`` column; ``class_probs``)."""

    path: Path
    summary: dict[str, Any]
    metrics: pd.DataFrame
    class_probs: pd.DataFrame
    #: whether its ``round_*`` settings are these (its round-method runs can be taken over)
    same_rounds: bool = False


@dataclass(frozen=True)
class ReusedRun:
    """One run taken over: its source, the algorithm's name there, the run's folder there and its seconds."""

    source: Source
    name: str
    folder: Path
    seconds: float


def _differing_setting(source: dict[str, Any], s: BenchmarkSettings, rounds: bool = False, skip: Sequence[str] = ()
                       ) -> str | None:
    """The first field a run reads on which the source's settings (``summary.json``) and ``s`` differ,
    described; None when none does. ``rounds``: the ``round_*`` fields (but ``skip``), else every other one."""
    for f in fields(BenchmarkSettings):
        if f.name in NOT_READ_BY_A_RUN or f.name.startswith("round_") != rounds or f.name in skip:
            continue
        if f.name not in source:
            return f"it has no setting {f.name} (written by another version)"
        mine = getattr(s, f.name)
        theirs = tuple(source[f.name]) if isinstance(mine, tuple) else source[f.name]
        if theirs != mine:
            return f"its {f.name} {theirs!r} differs from this run's {mine!r}"
    return None


def _read_run(folder: Path, flag: str, s: BenchmarkSettings) -> Source:
    """The finished benchmark run ``folder`` as a :class:`Source` for settings ``s``, or ``ValueError`` (one
    line starting ``{flag} {folder}:``): not a finished run (``summary.json``, ``metrics.csv``,
    ``class_probs.csv``, π_ref) or a setting a run reads that differs (:data:`NOT_READ_BY_A_RUN` and the
    ``round_*`` fields aside; ``same_rounds`` tells whether those are equal)."""
    missing = [name for name in ("summary.json", "metrics.csv", "class_probs.csv", str(_REFERENCE))
               if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"{flag} {folder}: not a finished benchmark run (no {missing[0]})")
    summary = json.loads((folder / "summary.json").read_text())
    settings = summary.get("settings", {})
    problem = _differing_setting(settings, s)
    if problem:
        raise ValueError(f"{flag} {folder}: {problem}; its runs are not this run's")
    same_rounds = any(k.startswith("round_") for k in settings) and _differing_setting(settings, s, rounds=True) is None
    tables = [pd.read_csv(folder / "metrics.csv").assign(variant=_VARIANTS[False])]
    ln = folder / "metrics_length_normalized.csv"
    if ln.is_file() and ln.stat().st_size > 1:
        tables.append(pd.read_csv(ln).assign(variant=_VARIANTS[True]))
    return Source(folder.resolve(), summary, pd.concat(tables, ignore_index=True), pd.read_csv(folder / "class_probs.csv"),
                  same_rounds)


def load_sources(folders: Sequence[str | Path], s: BenchmarkSettings) -> list[Source]:
    """The folders ``folders`` as sources for settings ``s``, or ``ValueError`` (one line naming the
    folder and the reason): not a finished benchmark run (``summary.json``, ``metrics.csv``,
    ``class_probs.csv``, π_ref), a setting a run reads that differs (:data:`NOT_READ_BY_A_RUN` and the
    ``round_*`` fields aside: module docstring), or a π_ref other than the first source's."""
    sources: list[Source] = []
    for folder in folders:
        source = _read_run(Path(folder), "--reuse", s)
        if sources and (source.path / _REFERENCE).read_bytes() != (sources[0].path / _REFERENCE).read_bytes():
            raise ValueError(f"--reuse {folder}: its π_ref differs from that of {sources[0].path}")
        sources.append(source)
    return sources


def _keeps_epochs(alg: str, seed: int, ln: bool, s: BenchmarkSettings) -> bool:
    """Whether this invocation keeps the run's epoch checkpoints (an online run's): all with
    ``keep_checkpoints``, else those of the first seed's summed runs (the win-rate tables read them)."""
    return round_alg(alg) is None and (s.keep_checkpoints or (not ln and seed == s.seeds[0]))


def _complete(source: Source, entry: dict[str, Any], s: BenchmarkSettings, ln: bool) -> bool:
    """Whether ``source`` holds the run ``entry`` (of its ``summary.json``) complete for settings ``s``."""
    name, seed = entry["algorithm"], entry["seed"]
    folder = source.path / entry["path"]
    m = source.metrics
    mine = m[(m.algorithm == name) & (m.seed == seed) & (m.variant == _VARIANTS[ln])]
    c = source.class_probs
    probs = c[(c.algorithm == name) & (c.seed == seed) & (c.variant == _VARIANTS[ln])]
    updates = set(mine["update"])
    if not {0, s.updates} <= updates or max(updates) != s.updates or set(probs["update"]) != updates:
        return False
    if round_alg(name) is not None:  # lm_runs.rounds' folder: the last policy in it, the round ends with keep_checkpoints
        return (folder / "config.json").is_file() and (not s.keep_checkpoints or (folder / "rounds" / "round-0" / "model").is_dir())
    if not (folder / "final" / "config.json").is_file():
        return False
    return not _keeps_epochs(name, seed, ln, s) or len(list(folder.glob("epochs/epoch-*"))) > 0


def _seconds(source: Source, entry: dict[str, Any], ln: bool) -> float:
    """The run's wall seconds as its source recorded them (module docstring)."""
    if "seconds" in entry:
        return float(entry["seconds"])
    return float(source.summary["seconds_per_run"][f"{entry['algorithm']}{'_ln' if ln else ''}"])


def reused_runs(sources: Sequence[Source], runs: Sequence[tuple[str, int, bool]], s: BenchmarkSettings
                ) -> dict[tuple[str, int, bool], ReusedRun]:
    """For each run (algorithm as named in ``s``, seed, length-normalized) of ``runs`` that some source
    holds complete: the first such source's :class:`ReusedRun`."""
    found: dict[tuple[str, int, bool], ReusedRun] = {}
    for alg, seed, ln in runs:
        for source in sources:
            if round_alg(alg) is not None and not source.same_rounds:
                continue
            entry = next((e for e in source.summary.get("runs", []) if _key(e["algorithm"]) == _key(alg)
                          and e["seed"] == seed and e["variant"] == _VARIANTS[ln]), None)
            if entry is not None and _complete(source, entry, s, ln):
                found[(alg, seed, ln)] = ReusedRun(source, entry["algorithm"], source.path / entry["path"],
                                                   _seconds(source, entry, ln))
                break
    return found


def load_against(folder: str | Path, s: BenchmarkSettings, sources: Sequence[Source] = ()) -> Source:
    """``--against``: the finished run ``folder`` whose round methods are compared, seed by seed, with this
    run's (``s``) — the same settings a run reads but the round methods' step η (``round_eta``), every other
    ``round_*`` field equal, so a pair differs in η alone (same π_ref, same judge per seed). ``ValueError``
    (one line naming the folder and the reason): not a finished run, a setting other than ``round_eta`` that
    differs, the same ``round_eta`` (its runs would be these), no round method chosen here, a round method of
    ``s`` × seed of ``s`` whose summed run it does not hold up to ``s.updates``, or a π_ref other than the
    ``sources``' (the π_ref fine-tuned here is checked against it too: :func:`check_reference`)."""
    folder = Path(folder)
    if not s.round_methods():
        raise ValueError(f"--against {folder}: no round method is chosen here (it compares this run's round methods "
                         "with that run's)")
    source = _read_run(folder, "--against", s)
    settings = source.summary["settings"]
    if "round_eta" not in settings:
        raise ValueError(f"--against {folder}: it ran no round method")
    problem = _differing_setting(settings, s, rounds=True, skip=("round_eta",))
    if problem:
        raise ValueError(f"--against {folder}: {problem}; only round_eta may differ")
    if settings["round_eta"] == s.round_eta:
        raise ValueError(f"--against {folder}: its round_eta {settings['round_eta']!r} is this run's: its runs would be "
                         "these; choose another --round_eta")
    m = source.metrics
    for alg in s.round_methods():
        for seed in s.seeds:
            mine = m[(m.algorithm.map(_key) == _key(alg)) & (m.seed == seed) & (m.variant == _VARIANTS[False])]
            if not {0, s.updates} <= set(mine["update"]):
                raise ValueError(f"--against {folder}: it holds no complete run of {alg}, seed {seed}")
    if sources and (source.path / _REFERENCE).read_bytes() != (sources[0].path / _REFERENCE).read_bytes():
        raise ValueError(f"--against {folder}: its π_ref differs from that of {sources[0].path}")
    return source


def against_metrics(against: Source, s: BenchmarkSettings) -> pd.DataFrame:
    """The tidy records (algorithm, seed, update, metric, value) of ``against``'s summed runs of this run's
    round methods on this run's seeds, each algorithm renamed :func:`~.settings.at_eta` (its name at the
    other run's ``round_eta``), so they stand beside this run's in one verdict table."""
    eta = float(against.summary["settings"]["round_eta"])
    m = against.metrics[(against.metrics.variant == _VARIANTS[False]) & against.metrics.seed.isin(s.seeds)]
    parts = [m[m.algorithm.map(_key) == _key(alg)].assign(algorithm=at_eta(alg, eta)) for alg in s.round_methods()]
    columns = ["algorithm", "seed", "update", "metric", "value"]
    return pd.concat(parts, ignore_index=True)[columns].sort_values(["algorithm", "seed", "metric", "update"], kind="stable")


def check_reference(sources: Sequence[Source], sft: Path) -> None:
    """``RuntimeError`` unless the π_ref fine-tuned here (``sft``) is the sources' byte for byte."""
    if sources and (Path(sft) / "model.safetensors").read_bytes() != (sources[0].path / _REFERENCE).read_bytes():
        raise RuntimeError(f"the π_ref fine-tuned here differs from that of {sources[0].path} (another machine or "
                           "library version?): its runs are not this run's; run without --reuse")


def take_over(run: ReusedRun, alg: str, seed: int, ln: bool, s: BenchmarkSettings, run_dir: Path
              ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Copy ``run``'s folder to ``run_dir`` (without epoch checkpoints this invocation would not keep) and
    return its records and class-probability rows, under the name ``alg``."""
    skip = () if _keeps_epochs(alg, seed, ln, s) else ("epochs",)
    shutil.copytree(run.folder, run_dir, ignore=lambda folder, names: [n for n in names if n in skip and Path(folder) == run.folder])
    m = run.source.metrics
    mine = m[(m.algorithm == run.name) & (m.seed == seed) & (m.variant == _VARIANTS[ln])]
    records = [{"update": int(r.update), "metric": r.metric, "value": float(r.value), "algorithm": alg, "seed": seed}
               for r in mine.itertuples(index=False)]
    c = run.source.class_probs
    rows = c[(c.algorithm == run.name) & (c.seed == seed) & (c.variant == _VARIANTS[ln])].assign(algorithm=alg)
    return records, rows.to_dict("records")
