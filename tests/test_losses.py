"""Torch side of egpo_core: losses vs. the closed forms, sampled-gradient unbiasedness, schemes,
policies, samplers and input validation. Everything in float64.

Tolerances: loss-based steps vs. closed forms within 1e-10 after centering; sampled gradients within
5 standard errors (computed from the draws) of the exact gradient.
"""

from __future__ import annotations

import copy
import dataclasses
import zlib

import numpy as np
import pytest
import torch
from scipy.special import log_softmax, logsumexp, softmax

from egpo_core.algorithms import ALGORITHMS, center, geometric_mixture_logits
from egpo_core.games import random_games
from egpo_core.losses import (
    anchor_mixture_logp,
    anchored_log_ratio,
    exact_loss,
    ipo_regression_loss,
    policy_gradient_loss,
    sampled_loss,
)
from torch_policies import NeuralPolicy, TabularPolicy
from egpo_core.samplers import categorical_indices, geometric_mixture_log_probs, uniform_indices
from egpo_core.schemes import extragradient_step, single_step, step

F64 = torch.float64
CLOSED_FORM_ATOL = 1e-10
Z_MAX = 5.0  # sampled means must lie within 5 standard errors of the exact gradient


def game(runs: int = 4, n: int = 7, seed: int = 0):
    rng = np.random.default_rng(seed + 1000)
    P = random_games(runs, n, seed)
    theta = rng.normal(size=(runs, n))
    ref = rng.normal(size=(runs, n))
    return P, theta, ref, rng


# ---------------------------------------------------------------------------------------------
# one SGD step on the exact loss == the algorithm's closed form
# ---------------------------------------------------------------------------------------------


def _cases():
    """(algorithm name, case label) for every registered algorithm, with its options by field."""
    cases = []
    for name, alg in ALGORITHMS.items():
        if not alg.simulated or alg.history_length > 1:  # MNPO reads past policies: the losses refuse it
            continue
        if alg.opponent == "mixture":
            cases += [(name, "explicit_mixture"), (name, "default_mixture")]
        elif alg.anchor == "magnet":
            cases += [(name, "magnet_is_ref"), (name, "random_magnet")]
        elif alg.opponent == "optimistic":
            cases += [(name, "previous"), (name, "first_step")]
        else:
            cases.append((name, "plain"))
    return cases


@pytest.mark.parametrize("beta,lr", [(0.1, 0.1), (0.01, 0.02), (1.0, 0.3), (0.001, 2e-4)])
@pytest.mark.parametrize("name,case", _cases())
def test_exact_loss_sgd_step_is_closed_form(name, case, beta, lr):
    alg = ALGORITHMS[name]
    P, theta, ref, rng = game(runs=5, n=8, seed=zlib.crc32(f"{name}/{case}/{beta}".encode()) % 1000)
    n = theta.shape[-1]
    eta = 4.0 * lr / (n * beta)
    loss_kw: dict = {"eta_beta": eta * beta}
    form_kw: dict = {}
    if case == "explicit_mixture":
        loss_kw["mixture"] = form_kw["mixture"] = 0.37
    elif case == "magnet_is_ref":
        loss_kw["magnet_logp"], form_kw["magnet_logits"] = torch.tensor(ref), ref
    elif case == "random_magnet":
        magnet = rng.normal(size=theta.shape)
        loss_kw["magnet_logp"], form_kw["magnet_logits"] = torch.tensor(magnet), magnet
    elif case == "previous":
        previous = theta + rng.normal(size=theta.shape)
        loss_kw["previous_probs"], form_kw["previous_logits"] = torch.tensor(softmax(previous, axis=-1)), previous

    policy = TabularPolicy(theta, dtype=F64)
    optimizer = torch.optim.SGD(policy.parameters(), lr=lr)
    ref_t, P_t = torch.tensor(ref), torch.tensor(P)
    make_loss = lambda opp: exact_loss(alg, policy(), ref_t, P_t, beta, opponent_probs=opp, **loss_kw)  # noqa: E731
    if alg.scheme == "minimize":  # INPO: its exact minimiser is the uniform-pair SGD step (Scheme); step() refuses it
        single_step(policy, optimizer, lambda: make_loss(None))
    else:
        step(alg, policy, optimizer, make_loss)

    got = center(policy.logits.detach().numpy())
    expected = alg.closed_form(theta, ref, P, eta, beta, **form_kw)
    assert np.max(np.abs(got - expected)) < CLOSED_FORM_ATOL
    # the step is not trivially small: a wrong step size or target would show well above the tolerance
    assert np.max(np.abs(expected - center(theta))) > 1e-6


def test_exact_loss_gradient_formula_ipo():
    """∇_θ of the ipo exact loss is (4/N)·center(θ − θ_A − T/β)·weight (mpo: weight 1/(1+ηβ))."""
    P, theta, ref, _ = game(runs=3, n=6, seed=3)
    beta, eta_beta = 0.2, 0.05
    for name in ("oipo1", "mpo"):
        alg = ALGORITHMS[name]
        policy = TabularPolicy(theta, dtype=F64)
        exact_loss(alg, policy(), torch.tensor(ref), torch.tensor(P), beta, eta_beta=eta_beta).backward()
        T = np.einsum("rij,rj->ri", P, softmax(theta, axis=-1))
        weight = alg.loss_weight(eta_beta)
        expected = 4.0 / 6 * center(log_softmax(theta, axis=-1) - log_softmax(ref, axis=-1) - T / beta) * weight
        np.testing.assert_allclose(policy.logits.grad.numpy(), expected, atol=1e-12, rtol=0)


def test_reduction_is_sum_over_runs_of_per_run_mean():
    P, theta, ref, _ = game(runs=3, n=5, seed=4)
    alg = ALGORITHMS["oipo1"]
    whole = exact_loss(alg, torch.tensor(theta).log_softmax(-1), torch.tensor(ref), torch.tensor(P), 0.1)
    parts = sum(
        exact_loss(alg, torch.tensor(theta[r : r + 1]).log_softmax(-1), torch.tensor(ref[r : r + 1]), torch.tensor(P[r : r + 1]), 0.1)
        for r in range(3)
    )
    assert abs(whole.item() - parts.item()) < 1e-10 * abs(parts.item())


def test_dispatch_is_by_fields_not_names():
    """A new algorithm declared with existing fields works without any change to losses/schemes."""
    P, theta, ref, _ = game(runs=2, n=5, seed=5)
    alias = dataclasses.replace(ALGORITHMS["egpo"], name="brand_new", label="New")
    results = []
    for alg in (ALGORITHMS["egpo"], alias):
        policy = TabularPolicy(theta, dtype=F64)
        opt = torch.optim.SGD(policy.parameters(), lr=0.05)
        step(alg, policy, opt, lambda o: exact_loss(alg, policy(), torch.tensor(ref), torch.tensor(P), 0.1, opponent_probs=o))
        results.append(policy.logits.detach().numpy())
    np.testing.assert_array_equal(results[0], results[1])


# ---------------------------------------------------------------------------------------------
# per-pair building blocks
# ---------------------------------------------------------------------------------------------


def test_ipo_regression_loss_formula():
    a, b, c, d, t = (torch.tensor([0.3, -1.0], dtype=F64) * k for k in (1, 2, 3, 4, 5))
    got = ipo_regression_loss(a, b, c, d, t)
    torch.testing.assert_close(got, (a - b - c + d - t) ** 2, rtol=0, atol=0)
    assert got.shape == (2,)  # no reduction


def test_anchor_mixture_is_the_geometric_mixture_of_its_anchors():
    """Σ_k w_k log π_k on three tabular anchors equals log of the normalised geometric mixture Π_k π_k^{w_k}
    plus its log-normaliser (≤ 0 by Hölder, a constant every pair difference cancels), within 1e-12 in
    float64; the anchored log-ratio is log π − that mixture; INPO's two-anchor case (ηβ, 1 − ηβ) is the
    expression c·a + (1 − c)·b bit for bit."""
    rng = np.random.default_rng(3)
    logs = [torch.tensor(log_softmax(rng.normal(size=7)), dtype=F64) for _ in range(3)]
    w = [0.2, 0.5, 0.3]
    mixed = anchor_mixture_logp(logs, w)
    geometric = sum(wk * lk.numpy() for wk, lk in zip(w, logs))
    normaliser = logsumexp(geometric)
    assert normaliser < 0
    assert np.allclose(mixed.numpy(), log_softmax(geometric) + normaliser, atol=1e-12, rtol=0)
    pairs = mixed[:, None] - mixed[None, :]
    assert np.allclose(pairs.numpy(), (log_softmax(geometric)[:, None] - log_softmax(geometric)[None, :]), atol=1e-12, rtol=0)
    logp = torch.tensor(log_softmax(rng.normal(size=7)), dtype=F64)
    assert torch.equal(anchored_log_ratio(logp, logs, w), logp - mixed)
    a, b = torch.randn(5, 2, dtype=torch.float32), torch.randn(5, 2, dtype=torch.float32)
    c = 2.0 * 0.1
    assert torch.equal(anchor_mixture_logp([a, b], [c, 1.0 - c]), c * a + (1.0 - c) * b)


@pytest.mark.parametrize(
    ("weights", "message"),
    [([0.5, 0.6], "sum to 1"), ([1.2, -0.2], "non-negative"), ([1.0], "one weight per anchor"), ([float("nan"), 1.0], "non-negative")],
)
def test_anchor_mixture_refuses_bad_weights(weights, message):
    logs = [torch.zeros(3), torch.zeros(3)]
    with pytest.raises(ValueError, match=message):
        anchor_mixture_logp(logs, weights)


def test_policy_gradient_loss_detaches_advantage():
    logp = torch.tensor([-0.5, -2.0], dtype=F64, requires_grad=True)
    advantage = torch.tensor([0.7, -0.2], dtype=F64, requires_grad=True)
    out = policy_gradient_loss(logp, advantage)
    out.sum().backward()
    torch.testing.assert_close(out, -advantage.detach() * logp.detach(), rtol=0, atol=0)
    torch.testing.assert_close(logp.grad, -advantage.detach(), rtol=0, atol=0)
    assert advantage.grad is None


# ---------------------------------------------------------------------------------------------
# sampled losses: unbiased gradients
# ---------------------------------------------------------------------------------------------

GAMES, DRAWS, SAMPLES = 3, 6000, 4


def _replicated(seed: int, n: int = 5):
    """GAMES distinct games, each repeated DRAWS times along the runs axis (row g·DRAWS + d).

    Runs are independent and the reduction is a sum over runs of per-run means, so one backward pass
    gives DRAWS independent sampled gradients per game, one per row.
    """
    P, theta, ref, rng = game(runs=GAMES, n=n, seed=seed)
    rep = lambda x: torch.tensor(np.repeat(x, DRAWS, axis=0))
    previous = softmax(theta + rng.normal(size=theta.shape), axis=-1)
    return rep(P), rep(theta), rep(ref), rep(previous)


def _exact_and_sampled_grads(name, seed, **kw):
    P, theta, ref, previous = _replicated(seed)
    alg = ALGORITHMS[name]
    beta = 0.5
    kw = dict(kw)
    if alg.opponent == "optimistic":
        kw["previous_probs"] = previous
    kw.setdefault("eta_beta", 0.1)

    exact_policy = TabularPolicy(theta, dtype=F64)
    exact_loss(alg, exact_policy(), ref, P, beta, **kw).backward()
    sampled_policy = TabularPolicy(theta, dtype=F64)
    gen = torch.Generator().manual_seed(seed)
    sampled_loss(alg, sampled_policy(), ref, P, beta, SAMPLES, gen, **kw).backward()

    n = theta.shape[-1]
    exact = exact_policy.logits.grad.reshape(GAMES, DRAWS, n)[:, 0].numpy()
    draws = sampled_policy.logits.grad.reshape(GAMES, DRAWS, n).numpy()
    return exact, draws, (P, theta, ref, previous, alg, beta, kw)


def _z_scores(exact, draws):
    mean = draws.mean(axis=1)
    se = draws.std(axis=1, ddof=1) / np.sqrt(draws.shape[1])
    return np.abs(mean - exact) / np.maximum(se, 1e-300), se


@pytest.mark.parametrize(
    "name,kw",
    [
        ("oipo1", {}),
        ("oipo1", {"pair_distribution": "policy"}),
        ("oipo2", {}),
        ("nash_md_pg", {}),
        ("omwu", {}),
        ("nash_md", {}),
        ("nash_md", {"mixture_normalize_over": "runs"}),
        ("sppo", {}),
        ("mpo", {}),
    ],
    ids=lambda v: str(v) if not isinstance(v, dict) else ",".join(f"{k}={x}" for k, x in v.items()) or "default",
)
def test_sampled_gradient_is_unbiased(name, kw):
    exact, draws, _ = _exact_and_sampled_grads(name, seed=11, **kw)
    z, se = _z_scores(exact, draws)
    assert z.max() < Z_MAX, f"max z-score {z.max():.2f}"
    # the test has power: the standard errors are small next to the gradient itself
    assert se.max() < 0.05 * np.abs(exact).max()


def test_sampled_gradient_check_can_fail():
    """The same criterion rejects the wrong reference: policy-pair samples vs. the uniform-pair gradient,
    and the runs-normalized mixture vs. the correctly normalized one."""
    _, draws, (P, theta, ref, _, alg, beta, kw) = _exact_and_sampled_grads("oipo1", seed=11, pair_distribution="policy")
    uniform_policy = TabularPolicy(theta, dtype=F64)
    exact_loss(alg, uniform_policy(), ref, P, beta, eta_beta=0.1).backward()
    uniform = uniform_policy.logits.grad.reshape(GAMES, DRAWS, -1)[:, 0].numpy()
    assert _z_scores(uniform, draws)[0].max() > 10 * Z_MAX

    _, draws, (P, theta, ref, _, alg, beta, kw) = _exact_and_sampled_grads("nash_md", seed=12, mixture_normalize_over="runs")
    correct_policy = TabularPolicy(theta, dtype=F64)
    exact_loss(alg, correct_policy(), ref, P, beta, eta_beta=0.1).backward()
    correct = correct_policy.logits.grad.reshape(GAMES, DRAWS, -1)[:, 0].numpy()
    assert _z_scores(correct, draws)[0].max() > 2 * Z_MAX


def test_sampled_loss_is_deterministic_given_generator():
    P, theta, ref, _ = game(runs=3, n=6, seed=6)
    values = [
        sampled_loss("oipo1", torch.tensor(theta).log_softmax(-1), ref, P, 0.1, 50, torch.Generator().manual_seed(3)).item()
        for _ in range(2)
    ]
    assert values[0] == values[1]


# ---------------------------------------------------------------------------------------------
# schemes
# ---------------------------------------------------------------------------------------------


def test_extragradient_step_sgd_is_egpo_closed_form():
    P, theta, ref, _ = game(runs=4, n=9, seed=7)
    beta, lr = 0.05, 0.03
    eta = 4 * lr / (9 * beta)
    alg = ALGORITHMS["egpo"]
    policy = TabularPolicy(theta, dtype=F64)
    opt = torch.optim.SGD(policy.parameters(), lr=lr)
    extragradient_step(policy, opt, lambda o: exact_loss(alg, policy(), ref, P, beta, opponent_probs=o))
    got = center(policy.logits.detach().numpy())
    assert np.max(np.abs(got - alg.closed_form(theta, ref, P, eta, beta))) < CLOSED_FORM_ATOL
    # and differs from a single OMD step (so the comparison can fail)
    omd = ALGORITHMS["oipo1"].closed_form(theta, ref, P, eta, beta)
    assert np.max(np.abs(got - omd)) > 1e-6


def _neural(seed):
    return NeuralPolicy(4, 12, hidden=6, depth=3, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize(
    "make_optimizer",
    [lambda p: torch.optim.Adam(p, lr=0.01), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)],
    ids=["adam", "sgd_momentum"],
)
def test_extragradient_optimizer_state_does_not_leak(make_optimizer):
    """θ_{t+1} = one optimizer step from (θ_t, state_t) with the θ_t-gradient against π_{t+½}."""
    P, _, ref, _ = game(runs=4, n=12, seed=8)
    ref, P = torch.tensor(ref), torch.tensor(P)
    alg = ALGORITHMS["egpo"]
    beta = 0.1

    def loss_for(module):
        return lambda opponent: exact_loss(alg, module(), ref, P, beta, opponent_probs=opponent)

    policy = _neural(1)
    opt = make_optimizer(policy.parameters())
    for _ in range(3):  # build up non-trivial optimizer state
        single_step(policy, opt, lambda: loss_for(policy)(None))
    start_params = copy.deepcopy(policy.state_dict())
    start_state = copy.deepcopy(opt.state_dict())

    extragradient_step(policy, opt, loss_for(policy))
    got = torch.cat([p.detach().flatten() for p in policy.parameters()])

    # manual: half step on a copy gives π_{t+½}; a fresh copy at (θ_t, state_t) takes one step against it
    half = _neural(2)
    half.load_state_dict(start_params)
    half_opt = make_optimizer(half.parameters())
    half_opt.load_state_dict(copy.deepcopy(start_state))
    single_step(half, half_opt, lambda: loss_for(half)(None))
    pi_half = half().detach().exp()

    full = _neural(3)
    full.load_state_dict(start_params)
    full_opt = make_optimizer(full.parameters())
    full_opt.load_state_dict(copy.deepcopy(start_state))
    single_step(full, full_opt, lambda: loss_for(full)(pi_half))
    expected = torch.cat([p.detach().flatten() for p in full.parameters()])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)

    # a leaky variant (parameters restored, optimizer state not) lands elsewhere: the check has power
    leaky = _neural(4)
    leaky.load_state_dict(start_params)
    leaky_opt = make_optimizer(leaky.parameters())
    leaky_opt.load_state_dict(copy.deepcopy(start_state))
    single_step(leaky, leaky_opt, lambda: loss_for(leaky)(None))
    leaky.load_state_dict(start_params)
    single_step(leaky, leaky_opt, lambda: loss_for(leaky)(pi_half))
    leaked = torch.cat([p.detach().flatten() for p in leaky.parameters()])
    assert (leaked - expected).abs().max() > 1e-6


def test_step_uses_single_scheme_for_single_algorithms():
    P, theta, ref, _ = game(runs=2, n=5, seed=9)
    calls = []
    policy = TabularPolicy(theta, dtype=F64)
    opt = torch.optim.SGD(policy.parameters(), lr=0.1)

    def make_loss(opponent):
        calls.append(opponent)
        return exact_loss("oipo1", policy(), ref, P, 0.1, opponent_probs=opponent)

    step("oipo1", policy, opt, make_loss)
    assert calls == [None]
    calls.clear()
    step("egpo", policy, opt, make_loss)
    assert len(calls) == 2 and calls[0] is None and isinstance(calls[1], torch.Tensor)


# ---------------------------------------------------------------------------------------------
# policies
# ---------------------------------------------------------------------------------------------


def test_tabular_policy_forward_is_log_softmax():
    theta = np.random.default_rng(0).normal(size=(3, 4))
    policy = TabularPolicy(theta, dtype=F64)
    np.testing.assert_allclose(policy().detach().numpy(), log_softmax(theta, axis=-1), atol=1e-12, rtol=0)


def test_neural_policy_runs_are_independent():
    policy = NeuralPolicy(3, 7, hidden=5, depth=3, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert policy.weights[0].shape == (3, 5, 5) and policy.weights[-1].shape == (3, 7, 5)
    before = policy().detach().clone()
    with torch.no_grad():
        for w in policy.weights:
            w[0] += 0.5
        policy.input[0] += 1.0
    after = policy().detach()
    torch.testing.assert_close(after[1:], before[1:], rtol=0, atol=0)
    assert (after[0] - before[0]).abs().max() > 1e-3
    # no gradient flows from run 1's output into run 0's parameters
    policy.zero_grad()
    policy()[1].sum().backward()
    for w in policy.weights:
        assert w.grad[0].abs().max() == 0 and w.grad[1].abs().max() > 0


def test_neural_policy_shared_matches_reference_construction():
    policy = NeuralPolicy(4, 9, hidden=6, depth=3, shared=True, generator=torch.Generator().manual_seed(1), dtype=F64)
    assert policy.weights[0].shape == (6, 6) and policy.biases[-1].shape == (9,)
    layers = [torch.nn.Linear(6, 6, dtype=F64), torch.nn.Linear(6, 6, dtype=F64), torch.nn.Linear(6, 9, dtype=F64)]
    with torch.no_grad():
        for layer, w, b in zip(layers, policy.weights, policy.biases):
            layer.weight.copy_(w)
            layer.bias.copy_(b)
    net = torch.nn.Sequential(layers[0], torch.nn.ReLU(), layers[1], torch.nn.ReLU(), layers[2])
    expected = torch.log_softmax(net(policy.input), dim=-1)
    torch.testing.assert_close(policy(), expected, rtol=0, atol=1e-12)


def test_neural_policy_init():
    gen = lambda: torch.Generator().manual_seed(5)
    a = NeuralPolicy(2, 300, hidden=200, depth=2, generator=gen(), dtype=F64)
    b = NeuralPolicy(2, 300, hidden=200, depth=2, generator=gen(), dtype=F64)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
        assert pa.dtype == F64
    assert all(bias.abs().max() == 0 for bias in a.biases)
    # Xavier-normal: variance 2/(fan_in + fan_out) = 2/500 for the last layer, 2/400 for the hidden one
    assert abs(a.weights[-1].var().item() / (2 / 500) - 1) < 0.05
    assert abs(a.weights[0].var().item() / (2 / 400) - 1) < 0.05
    assert abs(a.input.var().item() - 1) < 0.25


def _numpy_network(runs=3, hidden=4, n=8, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "input": rng.normal(size=(runs, hidden)),
        "weights": [rng.normal(size=(hidden, hidden)), rng.normal(size=(hidden, hidden)), rng.normal(size=(n, hidden))],
        "biases": [rng.normal(size=hidden), rng.normal(size=hidden), rng.normal(size=n)],
    }


def _numpy_forward(network):
    h = network["input"]
    for k, (w, b) in enumerate(zip(network["weights"], network["biases"])):
        h = h @ w.T + b
        if k < len(network["weights"]) - 1:
            h = np.maximum(h, 0)
    return log_softmax(h, axis=-1)


@pytest.mark.parametrize("shared", [True, False])
def test_neural_policy_from_arrays(shared):
    net = _numpy_network()
    policy = NeuralPolicy.from_arrays(net["input"], net["weights"], net["biases"], shared=shared)
    np.testing.assert_array_equal(policy.input.detach().numpy(), net["input"])
    for k, (w, b) in enumerate(zip(net["weights"], net["biases"])):
        got_w = policy.weights[k].detach().numpy()
        got_b = policy.biases[k].detach().numpy()
        if shared:
            np.testing.assert_array_equal(got_w, w)
            np.testing.assert_array_equal(got_b, b)
        else:
            np.testing.assert_array_equal(got_w, np.broadcast_to(w, (3,) + w.shape))
            np.testing.assert_array_equal(got_b, np.broadcast_to(b, (3,) + b.shape))
    np.testing.assert_allclose(policy().detach().numpy(), _numpy_forward(net), atol=1e-12, rtol=0)


def test_neural_policy_from_reference_instances():
    from egpo_core.reference_draws import reference_instances

    inst = reference_instances(2018011309, runs=3, num_actions=20, policy="neural")
    net = inst.network
    policy = NeuralPolicy.from_arrays(net["input"], net["weights"], net["biases"], shared=True)
    np.testing.assert_allclose(policy().detach().numpy(), log_softmax(inst.ref_logits, axis=-1), atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------
# samplers and the runs-axis mixture
# ---------------------------------------------------------------------------------------------


def test_mixture_actions_matches_numpy():
    rng = np.random.default_rng(2)
    theta, ref = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    got = geometric_mixture_log_probs(torch.tensor(log_softmax(theta, -1)), torch.tensor(log_softmax(ref, -1)), 0.3)
    expected = log_softmax(geometric_mixture_logits(theta, ref, 0.3), axis=-1)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-12, rtol=0)


def test_mixture_runs_axis_reproduces_reference_bug():
    rng = np.random.default_rng(3)
    theta, ref = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    c = 0.25
    m = (1 - c) * log_softmax(theta, -1) + c * log_softmax(ref, -1)
    got = geometric_mixture_log_probs(torch.tensor(log_softmax(theta, -1)), torch.tensor(log_softmax(ref, -1)), c, "runs")
    np.testing.assert_allclose(got.numpy(), m - logsumexp(m, axis=0, keepdims=True), atol=1e-12, rtol=0)
    np.testing.assert_allclose(np.exp(got.numpy()).sum(axis=0), 1.0, atol=1e-12)  # normalized over runs

    # the sampler renormalizes rows: run r samples y with probability ∝ exp(m[r,y]) / Σ_r' exp(m[r',y])
    sampling = np.exp(m) / np.exp(m).sum(axis=0, keepdims=True)
    sampling /= sampling.sum(axis=1, keepdims=True)
    draws = 200_000
    idx = categorical_indices(got.exp(), draws, torch.Generator().manual_seed(0)).numpy()
    freq = np.stack([np.bincount(row, minlength=6) / draws for row in idx])
    se = np.sqrt(sampling * (1 - sampling) / draws)
    assert np.max(np.abs(freq - sampling) / se) < Z_MAX
    correct = softmax(m, axis=-1)
    assert np.max(np.abs(freq - correct) / se) > 10 * Z_MAX  # the bug is visible


def test_uniform_indices_shape_and_range():
    idx = uniform_indices(3, 5, 1000, torch.Generator().manual_seed(0))
    assert idx.shape == (3, 1000) and idx.dtype == torch.int64
    assert idx.min() == 0 and idx.max() == 4


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------


def _args(runs=2, n=4):
    P, theta, ref, _ = game(runs=runs, n=n, seed=10)
    return torch.tensor(theta).log_softmax(-1), torch.tensor(ref), torch.tensor(P)


@pytest.mark.parametrize("beta", [0.0, -0.1, float("nan"), float("inf")])
@pytest.mark.parametrize(
    "loss", [exact_loss, lambda *args: sampled_loss(*args, 10)], ids=["exact_loss", "sampled_loss"]
)
def test_bad_beta(loss, beta):
    logp, ref, P = _args()
    with pytest.raises(ValueError, match="beta"):
        loss("oipo1", logp, ref, P, beta)


_BAD_LOSS_CALLS = {
    "unknown_algorithm": (lambda logp, ref, P: exact_loss("no_such_algorithm", logp, ref, P, 0.1), "unknown algorithm"),
    "ref_shape": (lambda logp, ref, P: exact_loss("oipo1", logp, torch.zeros(2, 5, dtype=F64), P, 0.1), r"\(2, 5\).*\(2, 4\)"),
    "P_shape": (
        lambda logp, ref, P: exact_loss("oipo1", logp, ref, torch.full((3, 4, 4), 0.5, dtype=F64), 0.1),
        r"\(3, 4, 4\).*\(2, 4\)",
    ),
    "opponent_shape": (
        lambda logp, ref, P: exact_loss("egpo", logp, ref, P, 0.1, opponent_probs=torch.full((2, 3), 1 / 3, dtype=F64)),
        r"\(2, 3\).*\(2, 4\)",
    ),
    "no_mixture": (lambda logp, ref, P: exact_loss("nash_md", logp, ref, P, 0.1), "mixture"),  # neither mixture nor eta_beta
    "mixture_above_1": (lambda logp, ref, P: exact_loss("nash_md", logp, ref, P, 0.1, mixture=1.5), "mixture"),
    "weight_needs_eta_beta": (lambda logp, ref, P: exact_loss("mpo", logp, ref, P, 0.1), "eta_beta"),
    "negative_eta_beta": (lambda logp, ref, P: exact_loss("oipo1", logp, ref, P, 0.1, eta_beta=-1.0), "eta_beta"),
    "unknown_pairs": (lambda logp, ref, P: exact_loss("oipo1", logp, ref, P, 0.1, pair_distribution="nearby"), "pair_distribution"),
    "pairs_for_pg": (
        lambda logp, ref, P: exact_loss("nash_md_pg", logp, ref, P, 0.1, eta_beta=0.1, pair_distribution="uniform"),
        "pair_distribution",
    ),
    "unknown_axis": (
        lambda logp, ref, P: sampled_loss("nash_md", logp, ref, P, 0.1, 5, eta_beta=0.1, mixture_normalize_over="columns"),
        "mixture_normalize_over",
    ),
    "opponent_for_pairwise": (lambda logp, ref, P: exact_loss("oipo2", logp, ref, P, 0.1, opponent_probs=logp.exp()), "opponent_probs"),
    "zero_samples": (lambda logp, ref, P: sampled_loss("oipo1", logp, ref, P, 0.1, 0), "num_samples"),
    "logp_1d": (lambda logp, ref, P: exact_loss("oipo1", logp[0], ref, P, 0.1), "logp"),
}
# unknown loss/opponent/anchor/scheme values are refused when an Algorithm is declared
# (tests/test_algorithm_vocabulary.py)


@pytest.mark.parametrize("case", list(_BAD_LOSS_CALLS))
def test_bad_inputs_raise_value_error(case):
    call, message = _BAD_LOSS_CALLS[case]
    with pytest.raises(ValueError, match=message):
        call(*_args())


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: ipo_regression_loss(torch.zeros(3), torch.zeros(4), torch.zeros(3), torch.zeros(3), 0.0), r"\(3,\).*\(4,\)"),
        (lambda: policy_gradient_loss(torch.zeros(2), torch.zeros(5)), r"\(2,\).*\(5,\)"),
        (lambda: categorical_indices(torch.tensor([[0.5, -0.1]]), 3), "non-negative"),
        (lambda: geometric_mixture_log_probs(torch.zeros(2, 3), torch.zeros(2, 3), 0.5, "diagonal"), "normalize_over"),
        (lambda: geometric_mixture_log_probs(torch.zeros(2, 3), torch.zeros(2, 3), -0.5), "c="),
        (lambda: geometric_mixture_log_probs(torch.zeros(2, 3), torch.zeros(2, 4), 0.5), r"\(2, 3\).*\(2, 4\)"),
    ],
    ids=["ipo_shapes", "pg_shapes", "negative_probs", "unknown_axis", "negative_c", "mixture_shapes"],
)
def test_bad_inputs_building_blocks_and_samplers(call, message):
    with pytest.raises(ValueError, match=message):
        call()


_NET = _numpy_network()


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: TabularPolicy(np.zeros(5)), "shape"),
        (lambda: NeuralPolicy(2, 5, depth=0), "depth"),
        (
            lambda: NeuralPolicy.from_arrays(_NET["input"], [_NET["weights"][0], np.zeros((4, 3)), _NET["weights"][2]], _NET["biases"]),
            "weights\\[1\\]",
        ),
        (lambda: NeuralPolicy.from_arrays(_NET["input"], _NET["weights"], _NET["biases"][:2] + [np.zeros(3)]), "biases\\[2\\]"),
        (
            lambda: NeuralPolicy.from_arrays(_NET["input"], [np.zeros((3, 4, 4))] + _NET["weights"][1:], _NET["biases"], shared=True),
            "shared=True",
        ),
    ],
    ids=["tabular_1d", "depth_0", "weight_shape", "bias_shape", "runs_axis_when_shared"],
)
def test_bad_inputs_policies(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------------------------
# the shared options: one LossOptions, or its fields as keywords
# ---------------------------------------------------------------------------------------------


def test_options_object_and_keywords_give_the_same_loss_bit_for_bit():
    from egpo_core.losses import LossOptions

    P, theta, ref, _ = game(runs=2, n=5, seed=9)
    logp = torch.tensor(theta).log_softmax(-1)
    previous = torch.tensor(theta * 1.1).softmax(-1)
    for name in ("nash_md", "omwu", "mpo"):
        options = LossOptions(eta_beta=0.1, mixture=0.05, previous_probs=previous, pair_distribution="policy")
        by_keywords = exact_loss(name, logp, torch.tensor(ref), torch.tensor(P), 0.1, eta_beta=0.1, mixture=0.05,
                                 previous_probs=previous, pair_distribution="policy")
        by_object = exact_loss(name, logp, torch.tensor(ref), torch.tensor(P), 0.1, options=options)
        assert by_object.item() == by_keywords.item()
        draws = [sampled_loss(name, logp, torch.tensor(ref), torch.tensor(P), 0.1, 9,
                              torch.Generator().manual_seed(4), **kw).item()
                 for kw in (dict(options=options), dict(eta_beta=0.1, mixture=0.05, previous_probs=previous,
                                                        pair_distribution="policy"))]
        assert draws[0] == draws[1]
    # keywords replace the object's fields
    nash = lambda **kw: exact_loss("nash_md", logp, torch.tensor(ref), torch.tensor(P), 0.1, **kw).item()
    assert nash(options=LossOptions(mixture=0.5), mixture=0.05) == nash(mixture=0.05) != nash(mixture=0.5)


def test_an_unknown_loss_option_is_named():
    P, theta, ref, _ = game(runs=1, n=3, seed=1)
    with pytest.raises(TypeError, match="unknown loss option.*eta_bta; known: opponent_probs, mixture, eta_beta"):
        exact_loss("egpo", torch.tensor(theta).log_softmax(-1), torch.tensor(ref), torch.tensor(P), 0.1, eta_bta=0.1)
    with pytest.raises(TypeError, match="options must be a LossOptions, got dict"):
        exact_loss("egpo", torch.tensor(theta).log_softmax(-1), torch.tensor(ref), torch.tensor(P), 0.1,
                   options={"eta_beta": 0.1})
