"""INPO, COMAL, ONPO and MNPO (issue 17): each against its numpy closed form, its reductions to the
algorithms it generalises, and the ordered-pair loss INPO (and MNPO) learn from.

Tolerances: identities that run the same arithmetic are bit for bit (``assert_array_equal``) within one
closed-form call, and 1e-12 relative between rows or runs of the simulator (the same kernel code, but not
necessarily the same vectorised path on every CPU); closed
forms against other closed forms 1e-12 (float64, a few operations apart); the sampled INPO update is a
Monte-Carlo estimate, checked at a stated tolerance that a wrong target or anchor would exceed many times.
The simulator's sampled INPO (scheme "minimize") against numpy's ordered_pair_step on the same draws (the
kernel's stream replayed by KernelStream): logits 1e-12, metrics of whole runs 1e-9 relative.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch
from scipy.special import log_softmax, softmax

from egpo_core import _kernel, _kernel_inputs, cli, simulate
from egpo_core._kernel_inputs import trajectory_seed
from egpo_core.config import SimulationConfig
from egpo_core.metrics import duality_gap, exploitability
from egpo_core.simulator import _config_table
from egpo_core.stepsizes import eta_from_lr
from egpo_core.algorithms import SIMULATOR_MODES, center, geometric_mixture_logits, get_algorithm
from egpo_core.algorithms.inpo import ordered_pair_minimiser, ordered_pair_step, ordered_pairs
from egpo_core.algorithms.mnpo import history_anchor_logits, sampled_step
from egpo_core.games import random_games
from egpo_core.losses import exact_loss, ipo_regression_loss

F64 = torch.float64


@pytest.fixture(scope="module")
def games():
    rng = np.random.default_rng(17)
    P = random_games(3, 5, rng)
    theta = 0.5 * rng.normal(size=(3, 5))
    ref = 0.5 * rng.normal(size=(3, 5))
    return P, theta, ref


# ---------------------------------------------------------------------------------------------
# INPO
# ---------------------------------------------------------------------------------------------


def test_inpo_exact_update_is_the_omd_step_and_its_simulation_online_ipo1_bit_for_bit(games):
    P, theta, ref = games
    np.testing.assert_array_equal(get_algorithm("inpo").closed_form(theta, ref, P, 0.7, 0.2),
                                  get_algorithm("oipo1").closed_form(theta, ref, P, 0.7, 0.2))
    res = simulate(P, ref, ["oipo1", "inpo"], beta=0.1, lr=0.05, iterations=30, init_logits=theta,
                   metrics=("exploitability",), progress=False)
    # the same declared fields run the same kernel code; rtol 1e-12 rather than bit equality, since two
    # rows of one batch need not take identical vectorised paths on every CPU
    np.testing.assert_allclose(res.duality_gap["inpo"], res.duality_gap["oipo1"], rtol=1e-12, atol=0)
    np.testing.assert_allclose(res.exploitability["inpo"], res.exploitability["oipo1"], rtol=1e-12, atol=0)
    assert np.all(np.abs(np.diff(res.duality_gap["inpo"], axis=1)) > 0)  # the policy moved


def _exact_ordered_pair_loss(logits: torch.Tensor, theta, ref, P, eta, beta) -> torch.Tensor:
    """E_{y,y′~π_t} E_order (h_θ(y_w, y_l) − η/2)² for one policy, through the loss block the language
    models use: y wins with probability P(y ≻ y′), the anchor is (1 − ηβ) log π_t + ηβ log π_ref."""
    n = theta.shape[-1]
    pi = torch.tensor(softmax(theta))
    anchor = torch.tensor(geometric_mixture_logits(theta, ref, eta * beta))
    logp = torch.log_softmax(logits, -1)
    y, yp = (idx.reshape(-1) for idx in torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij"))
    pair_weight = pi[y] * pi[yp]
    wins = torch.tensor(P)[y, yp]
    y_first = ipo_regression_loss(logp[y], logp[yp], anchor[y], anchor[yp], eta / 2)
    yp_first = ipo_regression_loss(logp[yp], logp[y], anchor[yp], anchor[y], eta / 2)
    return (pair_weight * (wins * y_first + (1 - wins) * yp_first)).sum()


@pytest.mark.parametrize("eta,beta", [(1.0, 0.1), (0.3, 0.5)])
def test_inpo_minimiser_of_the_exact_ordered_pair_loss_is_the_omd_step(games, eta, beta):
    """INPO's Proposition 6. The loss is a convex quadratic in the logits (Δ of log-softmax is Δ of
    logits), so a zero gradient is its minimum; the gradient at the current policy and at the
    Online IPO 2 step (one SGD step of this same loss) is far from zero."""
    P, theta, ref = games
    omd = get_algorithm("inpo").closed_form(theta, ref, P, eta, beta)
    for r in range(P.shape[0]):
        def gradient(logits, r=r):
            z = torch.tensor(logits, dtype=F64, requires_grad=True)
            _exact_ordered_pair_loss(z, theta[r], ref[r], P[r], eta, beta).backward()
            return z.grad.numpy()

        away = [gradient(theta[r]), gradient(get_algorithm("oipo2").closed_form(theta[r], ref[r], P[r], eta, beta))]
        scale = min(np.abs(g).max() for g in away)
        assert scale > 1e-3
        assert np.abs(gradient(omd[r])).max() < 1e-10  # ~1e-16 measured; ≥ 1e-3 anywhere else
        # the minimum: every perturbation raises the loss
        z_omd = torch.tensor(omd[r])
        base = float(_exact_ordered_pair_loss(z_omd, theta[r], ref[r], P[r], eta, beta))
        for d in np.random.default_rng(r).normal(size=(5, P.shape[-1])):
            bumped = float(_exact_ordered_pair_loss(z_omd + 0.05 * torch.tensor(center(d)), theta[r], ref[r], P[r], eta, beta))
            assert bumped > base + 1e-8


SAMPLED_TOL = 0.01  # max |logit error| of the sampled update at 200 000 pairs (measured 0.002–0.004)


def test_inpo_sampled_ordered_pair_update_tends_to_the_omd_step(games):
    P, theta, ref = games
    eta, beta = 1.0, 0.1
    omd = get_algorithm("inpo").closed_form(theta, ref, P, eta, beta)
    assert np.abs(omd - center(theta)).max() > 20 * SAMPLED_TOL  # the step is far larger than the tolerance

    def error(samples, seed):
        return np.abs(ordered_pair_step(theta, ref, P, eta, beta, samples, np.random.default_rng(seed)) - omd).max()

    many = [error(200_000, seed) for seed in range(3)]
    few = [error(2_000, seed) for seed in range(3)]
    assert max(many) < SAMPLED_TOL, many
    assert np.mean(few) > 3 * np.mean(many)  # the error falls like 1/√S: the estimate converges, not a bias
    # twice the step, or the Online IPO 2 step, misses by far more than the tolerance
    wrong_target = ordered_pair_step(theta, ref, P, 2 * eta, beta, 200_000, np.random.default_rng(0))
    assert np.abs(wrong_target - omd).max() > 5 * SAMPLED_TOL
    assert np.abs(get_algorithm("oipo2").closed_form(theta, ref, P, eta, beta) - omd).max() > 5 * SAMPLED_TOL


def test_inpo_sampled_update_minimises_the_loss_block_on_its_pairs(games):
    """The least-squares solve is the minimiser of Σ_s ipo_regression_loss(y_w, y_l; anchor, η/2) on the
    pairs it drew (replayed from the same generator)."""
    P, theta, ref = games
    eta, beta, samples = 0.8, 0.2, 3_000
    new = ordered_pair_step(theta[:1], ref[:1], P[:1], eta, beta, samples, np.random.default_rng(5))[0]
    winners, losers = (torch.tensor(a) for a in ordered_pairs(softmax(theta[0]), P[0], samples, np.random.default_rng(5)))
    anchor = torch.tensor(geometric_mixture_logits(theta[0], ref[0], eta * beta))

    def gradient(logits):
        z = torch.tensor(logits, dtype=F64, requires_grad=True)
        logp = torch.log_softmax(z, -1)
        ipo_regression_loss(logp[winners], logp[losers], anchor[winners], anchor[losers], eta / 2).sum().backward()
        return z.grad.numpy()

    assert np.abs(gradient(theta[0])).max() > 10.0
    assert np.abs(gradient(new)).max() < 1e-9
    with pytest.raises(ValueError, match="num_samples must be at least 1, got num_samples=0"):
        ordered_pair_step(theta, ref, P, eta, beta, 0, np.random.default_rng(5))


def test_inpo_pairs_are_ordered_by_the_preference():
    """A response that always wins is always the winner; between equals the order is a fair coin."""
    P = np.array([[0.5, 1.0, 0.5], [0.0, 0.5, 0.5], [0.5, 0.5, 0.5]])
    winners, losers = ordered_pairs(np.array([0.5, 0.5, 0.0]), P, 20_000, np.random.default_rng(0))
    mixed = winners != losers
    assert np.all(winners[mixed] == 0) and np.all(losers[mixed] == 1)
    winners, losers = ordered_pairs(np.array([0.5, 0.0, 0.5]), P, 20_000, np.random.default_rng(1))
    mixed = winners != losers
    assert abs(np.mean(winners[mixed] == 0) - 0.5) < 0.02  # 5 standard errors at ~10 000 pairs


def test_inpo_is_refused_with_neural_policies(games, tmp_path, capsys):
    P, theta, ref = games
    assert get_algorithm("inpo").simulated == ("tabular/exact", "tabular/sampled")
    assert get_algorithm("inpo").scheme == "minimize"
    assert all(get_algorithm(n).simulated == SIMULATOR_MODES for n in ("oipo1", "comal", "onpo", "mpo"))
    for gradient in ("exact", "sampled"):
        with pytest.raises(ValueError, match=r"inpo is simulated in the mode\(s\) tabular/exact, tabular/sampled only"):
            simulate(P, ref, ["oipo1", "inpo"], beta=0.1, lr=0.05, iterations=2, progress=False, policy="neural",
                     gradient=gradient)
    code = cli.main(["simulate", "--preset", "sampled-neural-beta0.1", "--algorithms", "inpo", "--out",
                     str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "tabular/exact, tabular/sampled only" in err
    assert not (tmp_path / "run").exists()


def test_inpo_exact_step_ignores_the_pair_option_and_stays_the_omd_step(games):
    """INPO's exact update is the minimiser, which does not depend on the pair weights: with
    pair_sampling="policy" it is still Online IPO 1's uniform-pair run bit for bit, while Online IPO 1
    itself (one SGD step, whose step does depend on them) changes."""
    P, theta, ref = games
    kwargs = dict(beta=0.1, lr=0.05, iterations=20, init_logits=theta, progress=False)
    uniform = simulate(P, ref, ["oipo1"], **kwargs)
    policy_pairs = simulate(P, ref, ["oipo1", "inpo"], pair_sampling="policy", **kwargs)
    np.testing.assert_allclose(policy_pairs.duality_gap["inpo"], uniform.duality_gap["oipo1"], rtol=1e-12, atol=0)
    assert np.abs(policy_pairs.duality_gap["oipo1"][:, -1] - uniform.duality_gap["oipo1"][:, -1]).max() > 1e-4


class KernelStream:
    """The two ``numpy.random.Generator`` methods :func:`ordered_pairs` calls, drawn from one simulator
    trajectory's splitmix64 stream the way the kernel draws (``_kernel._next_uniform``, ``_kernel._sample``)."""

    def __init__(self, seed: np.uint64):
        self.state = np.array([seed], dtype=np.uint64)

    def random(self, size: int) -> np.ndarray:
        return np.array([_kernel._next_uniform(self.state, 0) for _ in range(size)])

    def choice(self, n: int, size: int, p: np.ndarray) -> np.ndarray:
        table = np.empty((2, n))
        _kernel._build_sampler(np.asarray(p, dtype=np.float64), table, np.empty(n, dtype=np.int64))
        return np.array([_kernel._sample(table, u) for u in self.random(size)], dtype=np.int64)


def test_inpo_sampled_simulation_is_ordered_pair_step_on_the_kernels_draws(games):
    """The simulator's sampled tabular INPO (scheme "minimize") against numpy's ordered_pair_step fed each
    trajectory's stream (KernelStream, seeded as the simulator seeds it): the same pairs, so the same
    iterates up to rounding (log-softmax computed two ways; measured agreement ~1e-15 relative), compared
    through the duality gap and exploitability of π_0 … π_T at relative tolerance 1e-9."""
    P, theta, ref = games
    runs, n = theta.shape
    beta, lr, samples, steps, seed = 0.1, 0.05, 40, 12, 3
    res = simulate(P, ref, ["oipo1", "inpo"], beta=beta, lr=lr, iterations=steps, init_logits=theta, gradient="sampled",
                   num_samples=samples, seed=seed, metrics=("duality_gap", "exploitability"), progress=False)
    eta = eta_from_lr(lr, beta, n)
    for r in range(runs):
        stream = KernelStream(trajectory_seed(seed, "inpo", r, 0))
        logits = [theta[r]]
        for _ in range(steps):
            logits.append(ordered_pair_step(logits[-1][None], ref[r][None], P[r][None], eta, beta, samples, stream)[0])
        logits = np.array(logits)
        np.testing.assert_allclose(res.duality_gap["inpo"][r], duality_gap(P[r], logits, ref[r], beta), rtol=1e-9, atol=0)
        np.testing.assert_allclose(res.exploitability["inpo"][r], exploitability(P[r], logits), rtol=1e-9, atol=0)
    # the iterates moved, and not as the sampled Online IPO 1 (one SGD step) did
    assert np.abs(np.diff(res.duality_gap["inpo"], axis=1)).min() > 1e-6
    assert np.abs(res.duality_gap["inpo"][:, -1] - res.duality_gap["oipo1"][:, -1]).max() > 1e-3


@pytest.mark.parametrize("anchor", ["reference", "current", "magnet"])
def test_kernel_ordered_pair_logits_are_numpys_minimiser_for_every_anchor(games, anchor):
    """The kernel's sampled "minimize" update (``_kernel._ordered_pair_logits``) for each anchor a scheme
    "minimize" algorithm may declare, against numpy's ordered_pair_minimiser with the anchor
    (1 − ηβ) log π_t + ηβ log π_anchor on the same stream: 1e-12 (log-softmax computed two ways)."""
    P, theta, ref = (a[0] for a in games)
    n, eta, beta, samples, seed = theta.size, 0.8, 0.3, 60, np.uint64(12345)
    magnet = np.random.default_rng(9).normal(size=n)
    anchor_logits = {"reference": ref, "current": theta, "magnet": magnet}[anchor]
    out = np.empty(n)
    _kernel._ordered_pair_logits(0, np.ascontiguousarray(P.T), log_softmax(theta), softmax(theta), log_softmax(anchor_logits), eta, beta, samples,
                                 np.empty((2, n)), np.empty(n, dtype=np.int64), np.array([seed], dtype=np.uint64),
                                 np.empty(samples, dtype=np.int64), np.empty(samples, dtype=np.int64), out)
    expected = ordered_pair_minimiser(theta, geometric_mixture_logits(theta, anchor_logits, eta * beta), P, eta, samples,
                                      KernelStream(seed))
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
    assert np.abs(out - center(geometric_mixture_logits(theta, anchor_logits, eta * beta))).max() > 0.1  # f moved it


def _one_kernel_step(P, ref, theta, eta, beta, samples, copies, seed):
    """Centered logits after one simulator step of sampled tabular INPO, ``copies`` trajectories of the one
    game (each its own stream), read from the kernel's state."""
    n = theta.shape[-1]
    config = SimulationConfig(algorithms=("inpo",), beta=beta, eta=eta, iterations=1, gradient="sampled",
                              num_samples=samples, seed=seed)
    inputs = _kernel_inputs.build_kernel_inputs(
        np.repeat(P[None], copies, 0), np.repeat(log_softmax(ref)[None], copies, 0), np.repeat(theta[None], copies, 0),
        _config_table([config], n, config.algorithm_objects()), config.algorithm_objects(), config, width=1,
        n_hidden=0, shared=False, n_recorded=2)
    _kernel.run_chunk(0, 1, *inputs, numba.get_num_threads())
    return center(inputs.state.params)


def test_inpo_sampled_kernel_step_averages_to_the_omd_step(games):
    """The mean over 400 trajectories of one sampled kernel step approaches the exact OMD step as the pairs
    per step S grow (the minimiser of S pairs is consistent; its bias and spread fall with S): measured
    max |mean − OMD| ≈ 0.024–0.028 at S = 20 (mostly the bias of a minimiser of few pairs), 0.003–0.006 at
    S = 200 and ≈ 0.001 at S = 5 000 (the spread of a 400-trajectory mean), against an OMD step of 0.24."""
    P, theta, ref = (a[0] for a in games)
    eta, beta = 1.0, 0.1
    omd = get_algorithm("inpo").closed_form(theta, ref, P, eta, beta)
    assert np.abs(omd - center(theta)).max() > 0.2
    errors = {s: np.abs(_one_kernel_step(P, ref, theta, eta, beta, s, 400, 7).mean(axis=0) - omd).max() for s in (20, 5_000)}
    assert errors[5_000] < 0.005, errors  # 1/40 of the step
    assert errors[20] > 5 * errors[5_000], errors


# ---------------------------------------------------------------------------------------------
# COMAL: the refreshed ("magnet") anchor, MPO's vocabulary
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["tabular", "neural"])
def test_comal_never_refreshed_is_inpo_bit_for_bit(games, policy):
    P, theta, ref = games
    names = ["oipo1", "comal"] + (["inpo"] if policy == "tabular" else [])
    res = simulate(P, ref, names, beta=0.1, lr=0.05, iterations=25, magnet_period=0, policy=policy,
                   progress=False, **({"init_logits": theta} if policy == "tabular" else {}))
    for name in names[1:]:  # rtol 1e-12: two rows of one batch (see above)
        np.testing.assert_allclose(res.duality_gap[name], res.duality_gap["oipo1"], rtol=1e-12, atol=0)
    # refreshing changes the run (so the comparison above could fail)
    refreshed = simulate(P, ref, ["comal"], beta=0.1, lr=0.05, iterations=25, magnet_period=5, policy=policy,
                         progress=False, **({"init_logits": theta} if policy == "tabular" else {}))
    assert np.abs(refreshed.duality_gap["comal"][:, -1] - res.duality_gap["comal"][:, -1]).max() > 1e-6


def test_comal_refreshed_every_update_is_sppo(games):
    """K = 1: the anchor is π_t, so log π_{t+1} ≐ log π_t + η P(· ≻ π_t) — from π_0 = π_ref (the first
    update anchors at π_ref, the refresh comes at t = 1)."""
    P, theta, ref = games
    res = simulate(P, ref, ["sppo", "comal"], beta=0.1, lr=0.05, iterations=25, magnet_period=1, progress=False)
    np.testing.assert_allclose(res.duality_gap["comal"], res.duality_gap["sppo"], rtol=1e-10, atol=0)
    np.testing.assert_allclose(get_algorithm("comal").closed_form(theta, ref, P, 0.7, 0.2, magnet_logits=theta),
                               get_algorithm("sppo").closed_form(theta, ref, P, 0.7, 0.2), rtol=0, atol=1e-12)


def test_comal_and_mpo_share_the_refreshed_anchor_and_differ_only_by_the_step(games):
    """MPO's proximal step (loss weight 1/(1 + ηβ)) is COMAL's OMD step with η′ = η/(1 + ηβ):
    (log π + ηβ log m + η s)/(1 + ηβ) = (1 − η′β) log π + η′β log m + η′ s. So with one refresh period K
    both runs are the same up to that step size, in the closed forms and in the simulator."""
    P, theta, ref = games
    eta, beta = 0.7, 0.2
    comal, mpo = get_algorithm("comal"), get_algorithm("mpo")
    assert comal.anchor == mpo.anchor == "magnet"
    magnet = theta + np.random.default_rng(0).normal(size=theta.shape)
    np.testing.assert_allclose(mpo.closed_form(theta, ref, P, eta, beta, magnet_logits=magnet),
                               comal.closed_form(theta, ref, P, eta / (1 + eta * beta), beta, magnet_logits=magnet),
                               rtol=0, atol=1e-12)
    n, lr = P.shape[-1], 0.05
    eta_beta = 4 * lr / n
    runs = [simulate(P, ref, [name], beta=0.1, lr=rate, iterations=25, magnet_period=4, init_logits=theta,
                     progress=False).duality_gap[name] for name, rate in (("mpo", lr), ("comal", lr / (1 + eta_beta)))]
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-9, atol=0)


def test_comal_last_iterate_reaches_the_unregularised_equilibrium_where_inpo_stops_at_pi_star_beta():
    """One random 6-action game (measured: COMAL's exploitability 0.105 → 3.4e-5 after 10 000 updates,
    K = 200, η = 0.2, β = 0.1; INPO stays at π*_β's, 0.0495)."""
    rng = np.random.default_rng(1)
    P, ref = random_games(4, 6, rng)[:1], rng.normal(size=(4, 6))[:1]
    res = simulate(P, ref, ["inpo", "comal"], beta=0.1, eta=0.2, iterations=10_000, magnet_period=200,
                   metrics=("exploitability",), record_every=2_000, progress=False)
    comal, inpo = res.exploitability["comal"][0], res.exploitability["inpo"][0]
    assert inpo[-1] > 0.04 and abs(inpo[-1] - inpo[-2]) < 1e-9  # converged, to the regularised equilibrium
    assert comal[-1] < 1e-3 and comal[-1] < comal[1]  # still falling, far below π*_β's


# ---------------------------------------------------------------------------------------------
# ONPO
# ---------------------------------------------------------------------------------------------


def _two_sequence_onpo(theta0, aux0, P, eta, steps):
    """The paper's form: π′_{t+1} ∝ π′_t e^{η P(·≻π_t)}, π_{t+1} ∝ π′_{t+1} e^{η P(·≻π_t)}; centered logits."""
    theta, aux, out = theta0, aux0, []
    for _ in range(steps):
        s = P @ softmax(theta)
        aux = log_softmax(aux + eta * s)
        theta = center(aux + eta * s)
        out.append(theta)
    return out


def test_onpo_closed_form_is_the_papers_two_sequence_recursion(games):
    """From π′_0 ∝ π_0 e^{−η P(·≻π_0)} (the simulator's π_{−1} = π_0) every iterate agrees; from π′_0 = π_0
    the first step is log π_0 + 2η P(·≻π_0) instead of log π_0 + η P(·≻π_0)."""
    P, theta, ref = games
    onpo, eta, beta = get_algorithm("onpo"), 0.4, 0.1
    for r in range(P.shape[0]):
        paper = _two_sequence_onpo(center(theta[r]), theta[r] - eta * P[r] @ softmax(theta[r]), P[r], eta, 20)
        current, previous = theta[r], theta[r]
        for expected in paper:
            current, previous = onpo.closed_form(current, ref[r], P[r], eta, beta, previous_logits=previous), current
            np.testing.assert_allclose(current, expected, rtol=0, atol=1e-12)
        same_start = _two_sequence_onpo(center(theta[r]), theta[r], P[r], eta, 1)[0]
        np.testing.assert_allclose(same_start, center(theta[r] + 2 * eta * P[r] @ softmax(theta[r])), rtol=0, atol=1e-12)
        assert np.abs(same_start - paper[0]).max() > 1e-3


def test_onpo_is_omwu_anchored_at_the_current_policy_not_egpo_omwu(games):
    P, theta, ref = games
    onpo, omwu = get_algorithm("onpo"), get_algorithm("omwu")
    previous = theta + 0.4
    np.testing.assert_allclose(onpo.closed_form(theta, ref, P, 0.7, 0.2, previous_logits=previous),
                               omwu.closed_form(theta, theta, P, 0.7, 0.2, previous_logits=previous), rtol=0, atol=1e-12)
    assert np.abs(onpo.closed_form(theta, ref, P, 0.7, 0.2, previous_logits=previous)
                  - omwu.closed_form(theta, ref, P, 0.7, 0.2, previous_logits=previous)).max() > 1e-2
    assert (onpo.opponent, onpo.anchor) == ("optimistic", "current") and omwu.anchor == "reference"



def test_onpo_last_iterate_reaches_the_equilibrium_where_sppo_cycles():
    """The game of the COMAL test (its equilibrium gives one response probability 0): measured with
    η = 1, exploitability 0.105 → 3e-6 at 8 000 updates → 1e-9 at 16 000 (linear after a burn-in), while
    SPPO (the same step without optimism) stays above 0.03."""
    rng = np.random.default_rng(1)
    P, ref = random_games(4, 6, rng)[:1], rng.normal(size=(4, 6))[:1]
    res = simulate(P, ref, ["sppo", "onpo"], beta=0.1, eta=1.0, iterations=16_000, metrics=("exploitability",),
                   record_every=8_000, progress=False)
    onpo, sppo = res.exploitability["onpo"][0], res.exploitability["sppo"][0]
    assert onpo[-1] < 1e-6 and onpo[-1] < 1e-2 * onpo[1]
    assert min(sppo[1:]) > 1e-2

# ---------------------------------------------------------------------------------------------
# MNPO
# ---------------------------------------------------------------------------------------------


def test_mnpo_with_one_history_policy_and_ratio_eta_beta_is_inpo(games):
    P, theta, ref = games
    mnpo, inpo = get_algorithm("mnpo"), get_algorithm("inpo")
    np.testing.assert_allclose(mnpo.closed_form(theta, ref, P, 0.7, 0.2), inpo.closed_form(theta, ref, P, 0.7, 0.2),
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(mnpo.closed_form(theta, ref, P, 0.7, 0.2, history_logits=[theta], history_weights=[3.0],
                                                ratio=0.14), inpo.closed_form(theta, ref, P, 0.7, 0.2), rtol=0, atol=1e-12)


def test_mnpo_weights_are_normalised_and_each_history_policy_counts(games):
    P, theta, ref = games
    mnpo = get_algorithm("mnpo")
    history = [theta, theta + np.random.default_rng(1).normal(size=theta.shape), ref]
    args = (theta, ref, P, 0.5, 0.2)
    np.testing.assert_allclose(mnpo.closed_form(*args, history_logits=history, history_weights=[2, 2, 2]),
                               mnpo.closed_form(*args, history_logits=history), rtol=0, atol=1e-12)
    equal = mnpo.closed_form(*args, history_logits=history)
    assert np.abs(mnpo.closed_form(*args, history_logits=history, history_weights=[1, 0, 0])
                  - mnpo.closed_form(*args, history_logits=history[:1])).max() < 1e-12
    assert np.abs(equal - mnpo.closed_form(*args, history_logits=history, history_weights=[1, 0, 0])).max() > 1e-2
    # ratio 1: the history is ignored, log π_{t+1} ≐ log π_ref + η P(·≻π_t)
    np.testing.assert_allclose(mnpo.closed_form(*args, history_logits=history, ratio=1.0),
                               center(log_softmax(ref, -1) + 0.5 * np.einsum("rij,rj->ri", P, softmax(theta, -1))),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("weights,ratio,message", [
    ([1.0], None, "history_weights must be 3 non-negative numbers"),
    ([1.0, -1.0, 1.0], None, "history_weights must be 3 non-negative"),
    ([0.0, 0.0, 0.0], None, "with a positive sum"),
    (None, 1.5, r"ratio must lie in \[0, 1\], got ratio=1.5"),
])
def test_mnpo_bad_history_settings_name_the_value(games, weights, ratio, message):
    P, theta, ref = games
    with pytest.raises(ValueError, match=message):
        get_algorithm("mnpo").closed_form(theta, ref, P, 0.5, 0.2, history_logits=[theta] * 3, history_weights=weights,
                                          ratio=ratio)
    with pytest.raises(ValueError, match="history_logits is empty"):
        history_anchor_logits([], ref, 0.1)


def test_mnpo_closed_form_minimises_its_exact_ordered_pair_loss(games):
    """Proposition 6's argument with MNPO's anchor: zero gradient of the loss block at the closed form."""
    P, theta, ref = games
    eta, beta = 0.6, 0.2
    history = [theta, theta + 0.3 * np.random.default_rng(2).normal(size=theta.shape)]
    new = get_algorithm("mnpo").closed_form(theta, ref, P, eta, beta, history_logits=history, history_weights=[0.7, 0.3])
    anchor = history_anchor_logits(history, ref, eta * beta, [0.7, 0.3])
    n = theta.shape[-1]
    y, yp = (idx.reshape(-1) for idx in torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij"))
    for r in range(P.shape[0]):
        def gradient(logits, r=r):
            z = torch.tensor(logits, dtype=F64, requires_grad=True)
            logp, a, pi = torch.log_softmax(z, -1), torch.tensor(anchor[r]), torch.tensor(softmax(theta[r]))
            wins = torch.tensor(P[r])[y, yp]
            loss = pi[y] * pi[yp] * (wins * ipo_regression_loss(logp[y], logp[yp], a[y], a[yp], eta / 2)
                                     + (1 - wins) * ipo_regression_loss(logp[yp], logp[y], a[yp], a[y], eta / 2))
            loss.sum().backward()
            return z.grad.numpy()

        assert np.abs(gradient(theta[r])).max() > 1e-3
        assert np.abs(gradient(new[r])).max() < 1e-10


def test_mnpo_sampled_update_tends_to_its_closed_form(games):
    P, theta, ref = games
    eta, beta = 1.0, 0.1
    history = [theta, theta + 0.3 * np.random.default_rng(3).normal(size=theta.shape)]
    exact = get_algorithm("mnpo").closed_form(theta, ref, P, eta, beta, history_logits=history)
    got = sampled_step(theta, ref, P, eta, beta, 200_000, np.random.default_rng(4), history_logits=history)
    assert np.abs(got - exact).max() < SAMPLED_TOL
    assert np.abs(get_algorithm("inpo").closed_form(theta, ref, P, eta, beta) - exact).max() > 5 * SAMPLED_TOL


def test_mnpo_is_simulated_in_the_tabular_modes_only_and_listed_by_the_command_line_help(games, capsys):
    """MNPO runs in the simulator's tabular modes (its kernel update: tests/test_kernel_mnpo.py), as INPO."""
    P, theta, ref = games
    assert get_algorithm("mnpo").simulated == ("tabular/exact", "tabular/sampled")
    with pytest.raises(ValueError, match=r"mnpo is simulated in the mode\(s\) tabular/exact, tabular/sampled only"):
        simulate(P, ref, ["mnpo"], beta=0.1, lr=0.05, iterations=2, progress=False, policy="neural")
    with pytest.raises(SystemExit):
        cli.main(["simulate", "--help"])
    listed = " ".join(capsys.readouterr().out.split())
    assert ("known: oipo1, oipo2, nash_md, nash_md_pg, egpo, mpo, sppo, omwu, comal, inpo (tabular/exact, "
            "tabular/sampled only), mnpo (tabular/exact, tabular/sampled only), nash_mp, onpo)") in listed
    with pytest.raises(ValueError, match="'mnpo' reads a history of 2 past policies, which the torch losses do not keep"):
        exact_loss("mnpo", torch.zeros(1, 3, dtype=F64), torch.zeros(1, 3, dtype=F64), np.full((1, 3, 3), 0.5), 0.1)
