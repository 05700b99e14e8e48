"""Every combination of an Algorithm's declared fields (loss × opponent × anchor × scheme, and the
regression's pair distribution) runs the same math in the simulator kernel as in egpo_core.losses,
or is refused when the Algorithm is declared.

* Exact gradients: ``simulate`` (tabular and neural policies) against plain SGD on
  ``losses.exact_loss`` through ``schemes.step``, three updates from π_0 ≠ π_ref with a magnet reset
  at t = 2 and a loss weight 1/(1 + ηβ); compared through the duality gap and the exploitability
  of π_1 … π_3, relative tolerance 1e-9 (both sides are float64; they agree to ~1e-14).
* Sampled gradients: the kernel's logit gradient of one step (``_kernel._step_gradient``) against
  autograd of ``losses.sampled_loss`` fed the same draws (replayed from the kernel's splitmix64
  stream in the order its docstring states), tolerance 1e-9.
* The "minimize" scheme (ipo loss, current opponent, tabular only; refused otherwise): its exact
  step is the uniform-pair single step with weight 1 (checked above); its sampled step is INPO's
  ordered-pair minimiser, checked in tests/test_algorithm_inpo_family.py.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch
from scipy.special import log_softmax, softmax

from egpo_core import _kernel, losses, simulate
from egpo_core.losses import expectations
from egpo_core.algorithms import (ALGORITHMS, SIMULATOR_MODES, Algorithm, Anchor, LossFamily, Opponent, Scheme,
                                  get_algorithm)
from egpo_core.games import random_games
from egpo_core.metrics import duality_gap, exploitability
from torch_policies import NeuralPolicy, TabularPolicy
from egpo_core.schemes import step

F64 = torch.float64
RTOL = 1e-9
RUNS, N, HIDDEN = 3, 5, 4
BETA, LR, MIXTURE, MAGNET_PERIOD, STEPS = 0.3, 0.2, 0.3, 2, 3


def _unused_closed_form(*args, **kwargs):
    raise AssertionError("the combinations are checked against the torch losses, not a closed form")


def _declare(loss, opponent, anchor, scheme) -> Algorithm:
    return Algorithm(
        name=f"{loss}-{opponent}-{anchor}-{scheme}",
        label="combination",
        loss=loss,
        opponent=opponent,
        anchor=anchor,
        scheme=scheme,
        closed_form=_unused_closed_form,
        loss_weight=lambda eta_beta: 1.0 / (1.0 + eta_beta),
        simulated=("tabular/exact", "tabular/sampled") if scheme is Scheme.MINIMIZE else SIMULATOR_MODES,
    )


def _minimize_accepts(loss, opponent) -> bool:
    """The "minimize" scheme's meaningful fields (test_minimize_with_other_fields_is_refused)."""
    return loss is LossFamily.IPO and opponent is Opponent.CURRENT


def _accepted(with_scheme: bool):
    """(algorithm, pair distribution) for every accepted combination; the pair distribution is an
    option of the "ipo" loss only ("ipo2" pairs are y, y′ ~ π_t by definition, "pg" has none)."""
    schemes = list(Scheme) if with_scheme else [Scheme.SINGLE]
    cases = []
    for loss, opponent, anchor, scheme in itertools.product(LossFamily, Opponent, Anchor, schemes):
        if scheme is Scheme.EXTRAGRADIENT and opponent is Opponent.PAIRWISE:
            continue  # refused: test_extragradient_with_the_pairwise_opponent_is_refused
        if scheme is Scheme.MINIMIZE and not _minimize_accepts(loss, opponent):
            continue  # refused: test_minimize_with_other_fields_is_refused
        for pairs in ("uniform", "policy") if loss is LossFamily.IPO else (None,):
            alg = _declare(loss, opponent, anchor, scheme)
            cases.append(pytest.param(alg, pairs, id=f"{alg.name}-{pairs or 'own'}"))
    return cases


def test_every_declared_algorithm_is_a_checked_combination():
    """The registry holds no combination the tests below leave out (pairs: the loss's own)."""
    checked = {(p.values[0].loss, p.values[0].opponent, p.values[0].anchor, p.values[0].scheme) for p in _accepted(True)}
    for alg in ALGORITHMS.values():
        assert (alg.loss, alg.opponent, alg.anchor, alg.scheme) in checked


@pytest.mark.parametrize("loss", list(LossFamily))
@pytest.mark.parametrize("anchor", list(Anchor))
def test_extragradient_with_the_pairwise_opponent_is_refused(loss, anchor):
    with pytest.raises(ValueError, match="scheme 'extragradient'.*opponent 'pairwise'"):
        _declare(loss, Opponent.PAIRWISE, anchor, Scheme.EXTRAGRADIENT)


def test_minimize_with_other_fields_is_refused():
    """The minimiser's target is η P(· ≻ π_t): only the "ipo" loss against the current policy, and only
    in tabular modes (a network has no closed-form minimiser)."""
    refused = [(loss, opponent) for loss, opponent in itertools.product(LossFamily, Opponent)
               if not _minimize_accepts(loss, opponent)]
    assert len(refused) == len(LossFamily) * len(Opponent) - 1
    for loss, opponent in refused:
        with pytest.raises(ValueError, match="scheme 'minimize'.*needs loss 'ipo' and opponent 'current'"):
            _declare(loss, opponent, Anchor.REFERENCE, Scheme.MINIMIZE)
    for mode in ("neural/exact", "neural/sampled"):
        with pytest.raises(ValueError, match="scheme 'minimize'.*tabular policies only.*" + mode):
            Algorithm(name="m", label="m", loss="ipo", opponent="current", anchor="reference", scheme="minimize",
                      closed_form=_unused_closed_form, simulated=("tabular/exact", mode))
    module = TabularPolicy(np.zeros((1, 3)), dtype=F64)
    with pytest.raises(ValueError, match="'inpo' has scheme 'minimize'.*which no optimizer step takes"):
        step("inpo", module, torch.optim.SGD(module.parameters(), lr=0.1), lambda opponent: module().sum())


def test_uniform_pairs_with_the_ipo2_loss_are_refused():
    logp = torch.zeros(1, 3, dtype=F64)
    P = torch.full((1, 3, 3), 0.5, dtype=F64)
    for loss_fn, extra in ((losses.exact_loss, ()), (losses.sampled_loss, (4,))):
        with pytest.raises(ValueError, match="pair_distribution='uniform' contradicts loss 'ipo2'"):
            loss_fn(get_algorithm("oipo2"), logp, logp, P, 0.1, *extra, pair_distribution="uniform")


# ---------------------------------------------------------------------------------------------
# exact gradients: simulate vs SGD on losses.exact_loss
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def game():
    rng = np.random.default_rng(20251201)
    P = random_games(RUNS, N, rng)
    ref = rng.normal(size=(RUNS, N))
    theta0 = rng.normal(size=(RUNS, N))
    weights = [rng.normal(0.0, 0.7, size=(RUNS, HIDDEN, HIDDEN)) for _ in range(2)] + [rng.normal(0.0, 0.7, size=(RUNS, N, HIDDEN))]
    network = {
        "input": rng.normal(size=(RUNS, HIDDEN)),
        "weights": weights,
        "biases": [rng.normal(0.0, 0.1, size=w.shape[:2]) for w in weights],
    }
    return P, ref, theta0, network


def _torch_trajectory(alg, pairs, module, P, ref):
    """Logits of π_1 … π_STEPS from SGD on the exact torch loss, with the kernel's state rules:
    π_{t−1} = π_0 at t = 0, the magnet starts at π_ref and becomes π_t when t > 0 and t % period = 0.
    The "minimize" scheme's exact minimiser is the uniform-pair single step with weight 1, whatever the
    pair option and the declared weight (``egpo_core._kernel``)."""
    if alg.scheme is Scheme.MINIMIZE:
        alg, pairs = dataclasses.replace(alg, scheme=Scheme.SINGLE, loss_weight=lambda eta_beta: 1.0), "uniform"
    optimizer = torch.optim.SGD(module.parameters(), lr=LR)
    ref_t, P_t = torch.tensor(log_softmax(ref, axis=-1)), torch.tensor(P)
    options = {"pair_distribution": pairs} if pairs else {}
    previous = magnet = None
    logits = []
    for t in range(STEPS):
        with torch.no_grad():
            now = module().detach()
        previous = now.exp() if previous is None else previous
        magnet = now if t > 0 and t % MAGNET_PERIOD == 0 else (ref_t if magnet is None else magnet)

        def make_loss(opponent_probs, previous=previous, magnet=magnet):
            return losses.exact_loss(
                alg, module(), ref_t, P_t, BETA, opponent_probs=opponent_probs, mixture=MIXTURE,
                eta_beta=4 * LR / N, magnet_logp=magnet, previous_probs=previous, **options,
            )

        step(alg, module, optimizer, make_loss)
        previous = now.exp()
        with torch.no_grad():
            logits.append(module().detach().numpy())
    return logits


@pytest.mark.parametrize("policy", ["tabular", "neural"])
@pytest.mark.parametrize("alg,pairs", _accepted(with_scheme=True))
def test_exact_kernel_equals_exact_loss(game, alg, pairs, policy):
    P, ref, theta0, network = game
    if f"{policy}/exact" not in alg.simulated:
        pytest.skip(f"{alg.name} is not simulated with {policy} policies (refused when declared otherwise)")
    if policy == "tabular":
        module = TabularPolicy(theta0, dtype=F64)
        options = {"init_logits": theta0}
    else:
        module = NeuralPolicy.from_arrays(network["input"], network["weights"], network["biases"], shared=False)
        with torch.no_grad():
            start = module.logits().numpy()
        options = {"network": network, "init_logits": start}
    res = simulate(
        P, ref, [alg], beta=BETA, lr=LR, iterations=STEPS, policy=policy, gradient="exact", mixture=MIXTURE,
        magnet_period=MAGNET_PERIOD, pair_sampling=pairs or "uniform", metrics=("duality_gap", "exploitability"),
        progress=False, **options,
    )
    expected = _torch_trajectory(alg, pairs, module, P, ref)
    gaps = np.stack([duality_gap(P, logits, ref, BETA) for logits in expected], axis=1)
    exploits = np.stack([exploitability(P, logits) for logits in expected], axis=1)
    np.testing.assert_allclose(res.duality_gap[alg.name][:, 1:], gaps, rtol=RTOL, atol=0)
    np.testing.assert_allclose(res.exploitability[alg.name][:, 1:], exploits, rtol=RTOL, atol=0)
    # the updates moved the policy well beyond the tolerance, so a different update would show
    assert np.min(np.abs(np.diff(res.duality_gap[alg.name], axis=1))) > 1e-6


@pytest.mark.slow  # compiles the kernel's float32 specialization (about a minute), then seconds
@pytest.mark.parametrize("alg,pairs", _accepted(with_scheme=True))
def test_exact_kernel_with_float32_games_follows_float64(game, alg, pairs):
    """Every accepted combination's products (Pπ_t, Pσ, the optimistic Pπ_{t−1}, the uniform target P·1/N)
    through the float32 panels: the same trajectory as float64 games to 1e-6 relative over STEPS steps (each
    product off by ~1e-8 absolute), not the same bits."""
    if "tabular/exact" not in alg.simulated:
        pytest.skip(f"{alg.name} is not simulated with tabular policies")
    P, ref, theta0, _ = game
    options = dict(beta=BETA, lr=LR, iterations=STEPS, gradient="exact", mixture=MIXTURE, magnet_period=MAGNET_PERIOD,
                   pair_sampling=pairs or "uniform", metrics=("duality_gap", "exploitability"), init_logits=theta0,
                   progress=False)
    single = simulate(P, ref, [alg], dtype="float32", **options)
    double = simulate(P, ref, [alg], **options)
    for metric in ("duality_gap", "exploitability"):
        np.testing.assert_allclose(single.values[metric], double.values[metric], rtol=1e-6, atol=0)
    assert not np.array_equal(single.values["duality_gap"], double.values["duality_gap"])


# ---------------------------------------------------------------------------------------------
# sampled gradients: one kernel step vs losses.sampled_loss on the same draws
# ---------------------------------------------------------------------------------------------

SAMPLES = 7
SEED = np.uint64(987654321)


def _replay_draws(alg, pairs, pi, sigma, previous):
    """The kernel's draws of one sampled step, replayed from its stream (``_sampled_gradient``'s
    order), as the index arrays sampled_loss takes in its own order: the pair (or y), then one
    opponent index per target term."""
    state = np.array([SEED], dtype=np.uint64)
    stack = np.empty(N, dtype=np.int64)
    tables = {}
    for name, dist in (("pi", pi), ("sigma", sigma), ("previous", previous)):
        tables[name] = np.empty((2, N))
        _kernel._build_sampler(dist, tables[name], stack)
    draw = lambda name: _kernel._sample(tables[name], _kernel._next_uniform(state, 0))  # noqa: E731
    optimistic = alg.opponent is Opponent.OPTIMISTIC
    columns = []
    for _ in range(SAMPLES):
        if alg.loss is LossFamily.PG:
            drawn = [draw("pi"), draw("sigma")] + ([draw("previous")] if optimistic else [])
        else:
            if alg.loss is LossFamily.IPO2 or pairs == "policy":
                drawn = [draw("pi"), draw("pi")]
            else:
                state[0], z = _kernel._splitmix64(state[0])
                drawn = list(_kernel._index_pair(np.uint64(z), N))
            if alg.opponent is not Opponent.PAIRWISE:
                drawn += [draw("sigma")] + ([draw("previous")] if optimistic else [])
        columns.append(drawn)
    return [torch.tensor(np.array(row, dtype=np.int64))[None] for row in zip(*columns)]


@pytest.mark.parametrize("alg,pairs", _accepted(with_scheme=False))
def test_sampled_kernel_gradient_equals_sampled_loss_on_the_same_draws(alg, pairs, monkeypatch):
    rng = np.random.default_rng(5)
    P = random_games(1, N, rng)[0]
    theta, ref, previous_logits, magnet_logits = (rng.normal(size=N) for _ in range(4))
    logp, pi, logp_ref = log_softmax(theta), softmax(theta), log_softmax(ref)
    magnet, previous = log_softmax(magnet_logits), log_softmax(previous_logits)
    mixture_opponent = alg.opponent is Opponent.MIXTURE
    # σ as run_chunk builds it: the mixture normalized over actions, else π_t
    sigma = softmax((1 - MIXTURE) * logp + MIXTURE * logp_ref) if mixture_opponent else pi.copy()
    weight = alg.loss_weight(0.1)

    g = np.empty(N)
    scratch = [np.empty((2, N)) for _ in range(3)]
    _kernel._step_gradient(
        0, _kernel.LOSS_CODES[alg.loss], _kernel.OPPONENT_CODES[alg.opponent], _kernel.ANCHOR_CODES[alg.anchor],
        np.ascontiguousarray(P.T), logp, pi, P @ pi, logp_ref, magnet, previous, sigma, not mixture_opponent,
        np.empty(N), *scratch, np.empty(N, dtype=np.int64), BETA, weight, True, SAMPLES, pairs == "policy",
        np.array([SEED], dtype=np.uint64), g, np.empty(N), False, np.empty(0, dtype=np.float32), np.empty(0),
    )

    draws = iter(_replay_draws(alg, pairs, pi, sigma, np.exp(previous)))
    monkeypatch.setattr(expectations, "uniform_indices", lambda *args, **kwargs: next(draws))  # where sampled_loss draws
    monkeypatch.setattr(expectations, "categorical_indices", lambda *args, **kwargs: next(draws))
    theta_t = torch.tensor(theta[None], requires_grad=True)
    options = {"pair_distribution": pairs} if pairs else {}
    loss = losses.sampled_loss(
        alg, torch.log_softmax(theta_t, -1), ref[None], P[None], BETA, SAMPLES, mixture=MIXTURE, eta_beta=0.1,
        magnet_logp=magnet[None], previous_probs=np.exp(previous)[None], **options,
    )
    loss.backward()
    assert next(draws, None) is None  # sampled_loss took exactly the kernel's draws
    np.testing.assert_allclose(g, theta_t.grad.numpy()[0], rtol=0, atol=RTOL * np.abs(g).max())
    assert np.abs(g).max() > 1e-3  # a non-trivial gradient

