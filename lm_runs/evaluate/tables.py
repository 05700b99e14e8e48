r"""The evaluation's two tables in the paper's layout, as Markdown and LaTeX.

:func:`render_tables` picks the entries from the tidy win rates; :func:`render_vs_reference` and
:func:`render_pairwise` lay out plain dicts.

* **vs reference, by epoch** — one row per algorithm, one column per epoch ``k`` (the folder
  ``epochs/epoch-k``, 1-based: the model after k epochs of updates), entry = win rate of that
  model against π_ref in percent.
* **pairwise** — rows and columns are models (the best two epochs of each algorithm); entry
  ``(r, c)`` = win rate of the *row* model against the *column* model, in percent.

Entries are ``100 · win_rate`` with one decimal; an entry is bold where the row wins, i.e. where the
*displayed* value exceeds 50.0 (so a win rate of 0.50004, shown as 50.0, is not bold). A missing
entry (no judgement, or the diagonal) is shown as an en dash (``--`` in LaTeX). With ``ci`` given,
each entry is followed by its 95 % interval ``[low, high]`` in percent. An entry marked in
``flagged`` (the evaluation flags those from fewer than
:data:`~lm_runs.evaluate.statistics.MIN_INTERVAL_PROMPTS` prompts) carries a dagger (``†``,
``$^\dagger$`` in LaTeX) and is never bold; ``notes`` are printed under the table (the evaluation
explains the dagger there and states the judge's position bias).

The functions take plain dicts, so a hand-written comparison renders the same way as a computed one:

    >>> print(render_vs_reference({"egpo": {1: 0.55, 2: 0.481}}))
    | Algorithm | 1 | 2 |
    |---|---:|---:|
    | egpo | **55.0** | 48.1 |
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

from .settings import ModelSpec
from .statistics import MIN_INTERVAL_PROMPTS

__all__ = ["format_percent", "epoch_number", "render_vs_reference", "render_pairwise", "latex_escape", "render_tables", "table_notes"]

_EPOCH = re.compile(r"^(?:.*/)?epoch-(\d+)$")

#: What a missing entry shows.
MISSING_MD = "–"
MISSING_TEX = "--"
#: The mark of a flagged entry.
FLAG_MD = "†"
FLAG_TEX = r"$^\dagger$"

Interval = tuple[float, float]


def epoch_number(key: int | str) -> int:
    """1-based epoch number of a column key: an int ``k`` or a name ending in ``epoch-k`` (``"run/epoch-3"`` → 3)."""
    if isinstance(key, bool):
        raise ValueError(f"not an epoch: {key!r}")
    if isinstance(key, int):
        if key < 1:
            raise ValueError(f"epochs are 1-based (epochs/epoch-k, k >= 1), got {key}")
        return key
    match = _EPOCH.match(str(key))
    if not match:
        raise ValueError(f"not an epoch key (an int or a name ending in 'epoch-k'): {key!r}")
    return epoch_number(int(match.group(1)))


def _valid(value: float | None) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def format_percent(value: float | None, *, latex: bool = False, ci: Interval | None = None, flagged: bool = False) -> str:
    """``100·value`` with one decimal, bold when that displayed number is above 50.0 and not ``flagged``
    (a flagged entry carries the dagger instead); then ``ci`` as ``[low, high]``; the missing mark for None/NaN."""
    if not _valid(value):
        return MISSING_TEX if latex else MISSING_MD
    text = f"{100.0 * float(value):.1f}"
    if flagged:
        text += FLAG_TEX if latex else FLAG_MD
    elif float(text) > 50.0:
        text = rf"\textbf{{{text}}}" if latex else f"**{text}**"
    if ci is not None and _valid(ci[0]) and _valid(ci[1]):
        text += f" [{100.0 * ci[0]:.1f}, {100.0 * ci[1]:.1f}]"
    return text


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in a label (``online_ipo`` → ``online\\_ipo``)."""
    out = []
    for char in str(text):
        if char in "&%$#_{}":
            out.append("\\" + char)
        elif char == "~":
            out.append(r"\textasciitilde{}")
        elif char == "^":
            out.append(r"\textasciicircum{}")
        elif char == "\\":
            out.append(r"\textbackslash{}")
        else:
            out.append(char)
    return "".join(out)


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]], notes: Sequence[str] = ()) -> str:
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    for note in notes:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def _latex(header: Sequence[str], rows: Sequence[Sequence[str]], notes: Sequence[str] = ()) -> str:
    lines = [
        r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [r"{\footnotesize " + note + r"\par}" for note in notes]
    return "\n".join(lines) + "\n"


def _check_format(fmt: str) -> bool:
    if fmt not in ("markdown", "latex"):
        raise ValueError(f"fmt must be 'markdown' or 'latex', got {fmt!r}")
    return fmt == "latex"


def render_vs_reference(
    win_rates: Mapping[str, Mapping[int | str | None, float | None]],
    *,
    fmt: str = "markdown",
    ci: Mapping[str, Mapping[int | str | None, Interval]] | None = None,
    corner: str = "Algorithm",
    flagged: Mapping[str, Mapping[int | str | None, bool]] | None = None,
    notes: Sequence[str] = (),
) -> str:
    """Win rate against π_ref by epoch: ``win_rates[algorithm][epoch]`` in [0, 1].

    Rows follow the dict's order; columns are the epochs present in any row, ascending, labelled by
    their 1-based number (an epoch key is ``k`` or a name ending in ``epoch-k``). A model without an
    epoch (key ``None``: an extra ``--models`` entry) goes into a first column headed by the missing mark.
    ``flagged`` (same keys) marks entries; ``notes`` (already in ``fmt``) go under the table.
    """
    latex = _check_format(fmt)
    no_epoch = any(None in row for row in win_rates.values())
    epochs = sorted({epoch_number(k) for row in win_rates.values() for k in row if k is not None})
    keyed = {alg: {(None if k is None else epoch_number(k)): v for k, v in row.items()} for alg, row in win_rates.items()}
    keyed_ci = {
        alg: {(None if k is None else epoch_number(k)): v for k, v in row.items()} for alg, row in (ci or {}).items()
    }
    keyed_flags = {
        alg: {(None if k is None else epoch_number(k)): v for k, v in row.items()} for alg, row in (flagged or {}).items()
    }
    columns: list[int | None] = ([None] if no_epoch else []) + list(epochs)
    blank = MISSING_TEX if latex else MISSING_MD
    header = [latex_escape(corner) if latex else corner] + [blank if c is None else str(c) for c in columns]
    rows = []
    for alg, row in keyed.items():
        cells = [
            format_percent(
                row.get(c),
                latex=latex,
                ci=keyed_ci.get(alg, {}).get(c) if ci is not None else None,
                flagged=bool(keyed_flags.get(alg, {}).get(c)),
            )
            for c in columns
        ]
        rows.append([latex_escape(alg) if latex else alg] + cells)
    return _latex(header, rows, notes) if latex else _markdown(header, rows, notes)


def render_pairwise(
    labels: Sequence[str],
    win_rates: Mapping[tuple[str, str], float | None],
    *,
    fmt: str = "markdown",
    ci: Mapping[tuple[str, str], Interval] | None = None,
    display: Mapping[str, str] | None = None,
    corner: str = "",
    flagged: Mapping[tuple[str, str], bool] | None = None,
    notes: Sequence[str] = (),
) -> str:
    """Row-beats-column table: entry (r, c) = ``win_rates[(r, c)]``, or ``1 − win_rates[(c, r)]``
    when only the reverse direction is given (its interval mirrored likewise, its flag kept). Rows and
    columns are ``labels`` in order (``display`` maps a label to the text shown); the diagonal is the
    missing mark. ``flagged`` (same keys) marks entries; ``notes`` (already in ``fmt``) go under the table."""
    latex = _check_format(fmt)
    display = dict(display or {})

    def entry(r: str, c: str) -> tuple[float | None, Interval | None]:
        if r == c:
            return None, None
        if (r, c) in win_rates:
            return win_rates[(r, c)], (ci or {}).get((r, c))
        if (c, r) in win_rates and _valid(win_rates[(c, r)]):
            reverse = (ci or {}).get((c, r))
            return 1.0 - float(win_rates[(c, r)]), (None if reverse is None else (1.0 - reverse[1], 1.0 - reverse[0]))
        return None, None

    def shown(label: str) -> str:
        text = display.get(label, label)
        return latex_escape(text) if latex else text

    header = [latex_escape(corner) if latex else corner] + [shown(c) for c in labels]
    rows = []
    for r in labels:
        cells = []
        for c in labels:
            value, interval = entry(r, c)
            flag = bool((flagged or {}).get((r, c), (flagged or {}).get((c, r), False)))
            cells.append(format_percent(value, latex=latex, ci=interval if ci is not None else None, flagged=flag))
        rows.append([shown(r)] + cells)
    return _latex(header, rows, notes) if latex else _markdown(header, rows, notes)


def table_notes(rows: Any, *, both_orders: bool, latex: bool) -> list[str]:
    """The notes under a table made of the tidy ``rows`` (one comparison kind, one split).

    * When some entry rests on fewer than :data:`MIN_INTERVAL_PROMPTS` prompts: what its dagger means.
    * The judge's position bias over the table's pairs, pooled:
      Σ n_bias·bias / Σ n_bias = mean over the pairs judged in both orders of ½(P(a ≻ b) + P(b ≻ a)) − ½
      (each comparison counted once), or that it was not measured (one order per pair) and is then part
      of every entry.
    """
    notes = []
    few = rows[rows["few_prompts"]] if len(rows) else rows
    if len(few):
        count = int(few["n_prompts"].min())
        mark = FLAG_TEX if latex else FLAG_MD
        notes.append(
            f"{mark} from {count} prompts, fewer than {MIN_INTERVAL_PROMPTS}: a bootstrap over so few prompts "
            "understates the uncertainty, so these entries are not bold and their intervals are not to be trusted."
        )
    once = rows[rows["model"] < rows["opponent"]] if (rows["comparison"] == "pairwise").all() and len(rows) else rows
    weights = once["n_bias_pairs"].fillna(0).to_numpy(dtype=float)
    if not both_orders:
        notes.append(
            "Judge position bias: not measured (one order per pair), so it is part of every entry; "
            "judge both orders (--both_orders true) to remove it."
        )
    elif weights.sum() > 0:
        bias = float((once["position_bias"].fillna(0).to_numpy(dtype=float) * weights).sum() / weights.sum())
        formula = r"$\frac{1}{2}(P(a \succ b) + P(b \succ a)) - \frac{1}{2}$" if latex else "½·(P(a ≻ b) + P(b ≻ a)) − ½"
        notes.append(
            f"Judge position bias: {bias:+.3f} (mean of {formula} over the {int(weights.sum())} pairs of "
            "distinct responses, each judged in both orders; the entries average the two orders, which removes it)."
        )
    return notes


def render_tables(
    winrates: Any,
    models: Sequence[ModelSpec],
    selected: Mapping[str, Sequence[str]],
    *,
    both_orders: bool = True,
    vs_reference_split: str = "all",
    pairwise_split: str = "report",
) -> dict[str, str]:
    """The Markdown and LaTeX tables from the tidy win rates (a DataFrame as :func:`evaluate` writes).

    Returns ``{"vs_reference.md", "vs_reference.tex", "pairwise.md", "pairwise.tex"}`` and the same
    with ``_ci`` (entries followed by their 95 % interval). vs reference: row = algorithm, column =
    epoch, on ``vs_reference_split``; pairwise: the ``selected`` models, row beats column, on
    ``pairwise_split``. Entries whose row is ``few_prompts`` are flagged; :func:`table_notes` go under
    each table (``both_orders``: whether the judge was asked both orders).
    """
    by_name = {m.name: m for m in models}
    vs = winrates[(winrates["comparison"] == "vs_reference") & (winrates["split"] == vs_reference_split)]
    vs = vs[vs["model"].isin(list(by_name))]
    grid: dict[str, dict[int | None, float]] = {}
    grid_ci: dict[str, dict[int | None, tuple[float, float]]] = {}
    grid_flags: dict[str, dict[int | None, bool]] = {}
    for m in models:
        row = vs[vs["model"] == m.name]
        if row.empty:
            continue
        algorithm = m.algorithm or m.name
        grid.setdefault(algorithm, {})[m.epoch] = float(row["win_rate"].iloc[0])
        grid_ci.setdefault(algorithm, {})[m.epoch] = (float(row["ci_low"].iloc[0]), float(row["ci_high"].iloc[0]))
        grid_flags.setdefault(algorithm, {})[m.epoch] = bool(row["few_prompts"].iloc[0])
    labels = [name for names in selected.values() for name in names]
    pw = winrates[(winrates["comparison"] == "pairwise") & (winrates["split"] == pairwise_split)]
    cells = {(r.model, r.opponent): float(r.win_rate) for r in pw.itertuples()}
    cells_ci = {(r.model, r.opponent): (float(r.ci_low), float(r.ci_high)) for r in pw.itertuples()}
    cells_flags = {(r.model, r.opponent): bool(r.few_prompts) for r in pw.itertuples()}
    display = {name: by_name[name].label for name in labels}
    tables: dict[str, str] = {}
    for fmt, ext in (("markdown", "md"), ("latex", "tex")):
        latex = fmt == "latex"
        vs_notes = table_notes(vs, both_orders=both_orders, latex=latex)
        pw_notes = table_notes(pw, both_orders=both_orders, latex=latex)
        tables[f"vs_reference.{ext}"] = render_vs_reference(grid, fmt=fmt, flagged=grid_flags, notes=vs_notes)
        tables[f"vs_reference_ci.{ext}"] = render_vs_reference(grid, fmt=fmt, ci=grid_ci, flagged=grid_flags, notes=vs_notes)
        tables[f"pairwise.{ext}"] = render_pairwise(labels, cells, fmt=fmt, display=display, flagged=cells_flags, notes=pw_notes)
        tables[f"pairwise_ci.{ext}"] = render_pairwise(
            labels, cells, fmt=fmt, display=display, ci=cells_ci, flagged=cells_flags, notes=pw_notes
        )
    return tables
