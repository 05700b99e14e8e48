"""MNPO in the simulator kernel (issue 17): the ring of the H last log-policies per trajectory.

The exact tabular update log π_{t+1} ≐ ηβ log π_ref + (1 − ηβ) Σ_j λ_j log π_{t−j} + η P(· ≻ π_t) against
iterating ``mnpo.closed_form`` with the same history (π_t first, π_0 before π_0); the sampled update against
``mnpo.sampled_step`` fed the kernel's own stream (the draws INPO's sampled update makes). Tolerances: 1e-9
relative on the duality gap and exploitability of π_0 … π_T (measured agreement ≤ 2e-14: the two compute the
same sums in another order and log-softmax two ways); H = 1 against INPO bit for bit (the kernel runs INPO's
code); a wrong history moves the gap by more than 1e-3 (measured: H = 3 vs H = 1, 7e-2 exact, 9e-2 sampled;
the oldest policy alone vs H = 1, 0.11 and 0.13).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from egpo_core import simulate
from egpo_core._kernel_inputs import trajectory_seed
from egpo_core.algorithms import get_algorithm, mnpo
from egpo_core.games import random_games
from egpo_core.metrics import duality_gap, exploitability
from egpo_core.stepsizes import eta_from_lr
from test_algorithm_inpo_family import KernelStream

BETA, LR, STEPS, SAMPLES, SEED = 0.1, 0.05, 15, 40, 3
HISTORIES = [(1, None), (3, None), (3, (3.0, 1.0, 0.5))]


@pytest.fixture(scope="module")
def games():
    rng = np.random.default_rng(23)
    P = random_games(3, 5, rng)
    theta = 0.5 * rng.normal(size=(3, 5))
    ref = 0.5 * rng.normal(size=(3, 5))
    return P, theta, ref


def _run(games, algorithm, **options):
    P, theta, ref = games
    return simulate(P, ref, [algorithm], beta=BETA, lr=LR, iterations=STEPS, init_logits=theta, seed=SEED,
                    metrics=("duality_gap", "exploitability"), progress=False, **options)


def _iterate(step, theta0, length):
    """π_0 … π_STEPS from ``step(theta, history)``, history = (π_t, π_{t−1}, …) with π_0 before π_0."""
    logits, history = [theta0], [theta0] * length
    for _ in range(STEPS):
        logits.append(step(logits[-1], history))
        history = [logits[-1]] + history[:-1]
    return np.array(logits)


def _assert_curves(res, P, ref, logits, r):
    np.testing.assert_allclose(res.duality_gap["mnpo"][r], duality_gap(P[r], logits, ref[r], BETA), rtol=1e-9, atol=0)
    np.testing.assert_allclose(res.exploitability["mnpo"][r], exploitability(P[r], logits), rtol=1e-9, atol=0)


def test_declared_history_is_the_trainers_default_and_with_history_validates():
    alg = get_algorithm("mnpo")
    assert (alg.history_length, alg.history_weights, alg.scheme) == (2, None, "minimize")
    assert alg.simulated == ("tabular/exact", "tabular/sampled")
    np.testing.assert_array_equal(mnpo.with_history(3, [2, 1, 1]).history_lambdas, [0.5, 0.25, 0.25])
    with pytest.raises(ValueError, match=r"history_weights must be 3 \(history_length\) non-negative numbers"):
        mnpo.with_history(3, [1.0, 2.0])
    with pytest.raises(ValueError, match="history_length must be a whole number ≥ 1, got 0"):
        mnpo.with_history(0)
    with pytest.raises(ValueError, match="history_length 2 > 1 needs scheme 'minimize'"):
        dataclasses.replace(get_algorithm("oipo1"), history_length=2)


def test_one_history_policy_is_inpo_bit_for_bit(games):
    """H = 1 runs INPO's code: the same bits as INPO's run. (The sampled draws are seeded by the algorithm's
    name, so the sampled H = 1 is checked against INPO's numpy update on its own stream below.)"""
    inpo = _run(games, "inpo")
    one = _run(games, mnpo.with_history(1))
    np.testing.assert_array_equal(one.duality_gap["mnpo"], inpo.duality_gap["inpo"])
    np.testing.assert_array_equal(one.exploitability["mnpo"], inpo.exploitability["inpo"])


@pytest.mark.parametrize("length, weights", HISTORIES)
def test_exact_kernel_is_the_iterated_closed_form(games, length, weights):
    P, theta, ref = games
    eta = eta_from_lr(LR, BETA, P.shape[1])
    res = _run(games, mnpo.with_history(length, weights))
    for r in range(P.shape[0]):
        logits = _iterate(lambda th, hist: mnpo.closed_form(th, ref[r], P[r], eta, BETA, history_logits=hist,
                                                            history_weights=weights), theta[r], length)
        _assert_curves(res, P, ref, logits, r)
    assert np.abs(np.diff(res.duality_gap["mnpo"], axis=1)).min() > 1e-6  # the policy moved


@pytest.mark.parametrize("length, weights", HISTORIES)
def test_sampled_kernel_is_sampled_step_on_its_draws(games, length, weights):
    """The sampled tabular MNPO against ``mnpo.sampled_step`` fed each trajectory's stream (KernelStream,
    seeded as the simulator seeds it): S ordered pairs of π_t per step, in INPO's draw order."""
    P, theta, ref = games
    eta = eta_from_lr(LR, BETA, P.shape[1])
    res = _run(games, mnpo.with_history(length, weights), gradient="sampled", num_samples=SAMPLES)
    for r in range(P.shape[0]):
        stream = KernelStream(trajectory_seed(SEED, "mnpo", r, 0))
        logits = _iterate(lambda th, hist: mnpo.sampled_step(th, ref[r], P[r], eta, BETA, SAMPLES, stream,
                                                             history_logits=hist, history_weights=weights),
                          theta[r], length)
        _assert_curves(res, P, ref, logits, r)


@pytest.mark.parametrize("gradient", ["exact", "sampled"])
def test_the_history_changes_the_run(games, gradient):
    """A kernel that ignored the ring (or read it in the wrong order) would fail here: H = 3 is not H = 1, the
    most recent weight alone is H = 1, and the oldest weight alone is not."""
    options = {"gradient": gradient, "num_samples": SAMPLES}
    gap = {key: _run(games, mnpo.with_history(*key), **options).duality_gap["mnpo"]
           for key in [(1, None), (3, None), (3, (1.0, 0.0, 0.0)), (3, (0.0, 0.0, 1.0))]}
    assert np.abs(gap[3, None] - gap[1, None]).max() > 1e-3
    np.testing.assert_allclose(gap[3, (1.0, 0.0, 0.0)], gap[1, None], rtol=1e-12, atol=0)
    assert np.abs(gap[3, (0.0, 0.0, 1.0)] - gap[1, None]).max() > 1e-3


def test_the_history_is_a_setting_that_run_json_keeps_and_the_command_line_sets(games, tmp_path):
    """``history_length``/``history_weights`` apply to the algorithms that read a history (MNPO) and are
    refused in one line without one; an Algorithm object's own history becomes the setting, so the config's
    dict (what run.json stores, algorithms by name) rebuilds the same run; ``--history-length`` and
    ``--history-weights`` reach the kernel (the run equals the API's with that history, bit for bit)."""
    import json

    from egpo_core import cli
    from egpo_core.config import SimulationConfig
    from egpo_core.game_io import save_games

    base = dict(beta=BETA, lr=LR, iterations=STEPS)
    config = SimulationConfig(algorithms=[mnpo.with_history(3, (3.0, 1.0, 0.5)), "inpo"], **base)
    assert (config.history_length, config.history_weights) == (3, (3.0, 1.0, 0.5))
    again = SimulationConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert [(a.name, a.history_length, a.history_weights) for a in again.algorithm_objects()] == \
        [("mnpo", 3, (3.0, 1.0, 0.5)), ("inpo", 1, None)]
    assert SimulationConfig(algorithms=["mnpo"], history_weights=[1, 1, 1, 1], **base).history_length == 4
    with pytest.raises(ValueError, match=r"^history_length=3: no selected algorithm reads a history of past policies"):
        SimulationConfig(algorithms=["inpo", "egpo"], history_length=3, **base)
    with pytest.raises(ValueError, match=r"history_weights must be 2 \(history_length\) non-negative numbers"):
        SimulationConfig(algorithms=["mnpo"], history_length=2, history_weights=[1, 2, 3], **base)
    with pytest.raises(ValueError, match="other than the given history_length=2"):
        SimulationConfig(algorithms=[mnpo.with_history(3)], history_length=2, **base)

    P, theta, ref = games
    save_games(tmp_path / "games.npz", P, ref)
    out = tmp_path / "run"
    cli.main(["simulate", "--games", str(tmp_path / "games.npz"), "--algorithms", "mnpo", "--beta", str(BETA),
              "--lr", str(LR), "--iterations", str(STEPS), "--history-length", "3", "--history-weights", "3,1,0.5",
              "--out", str(out), "--no-progress", "--no-figures", "--format", "csv"])
    saved = json.loads((out / "run.json").read_text())
    assert (saved["config"]["history_length"], saved["config"]["history_weights"]) == (3, [3.0, 1.0, 0.5])
    from egpo_core.results import load_result

    api = simulate(P, ref, [mnpo.with_history(3, (3.0, 1.0, 0.5))], beta=BETA, lr=LR, iterations=STEPS, progress=False)
    np.testing.assert_array_equal(load_result(out).duality_gap["mnpo"], api.duality_gap["mnpo"])
    other = simulate(P, ref, ["mnpo"], beta=BETA, lr=LR, iterations=STEPS, progress=False)
    assert np.abs(other.duality_gap["mnpo"] - api.duality_gap["mnpo"]).max() > 1e-3 * api.duality_gap["mnpo"].max()
