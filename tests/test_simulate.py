"""The batched simulator: its compiled steps against the closed forms and the torch losses, its
determinism, conventions, the paper's convergence claims, outputs and errors."""

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import log_softmax, softmax

from egpo_core import _kernel, simulate, sweep
from egpo_core.algorithms import ALGORITHMS, PAPER_ALGORITHMS, get_algorithm
from egpo_core.games import random_games
from egpo_core.losses import exact_loss
from egpo_core.metrics import duality_gap
from egpo_core.network import network_logits, neural_init
from torch_policies import NeuralPolicy
from egpo_core.presets import get_preset
from egpo_core.reference_draws import reference_instances
from egpo_core.stepsizes import eta_from_lr


@pytest.fixture(scope="module")
def games():
    rng = np.random.default_rng(7)
    P = random_games(4, 6, rng)
    ref = rng.normal(size=(4, 6))
    return P, ref


def _closed_form_trajectory(name, P, ref, eta, beta, steps, magnet_period=0):
    """Gap of π_0 … π_steps from an algorithm's numpy closed form (the oracle)."""
    alg = ALGORITHMS[name]
    theta, previous, magnet = ref.copy(), ref.copy(), ref.copy()
    history = [theta] * alg.history_length  # π_t, π_{t−1}, …; before π_0: π_0
    gaps = [duality_gap(P, theta, ref, beta)]
    for t in range(steps):
        if magnet_period and t > 0 and t % magnet_period == 0:
            magnet = theta.copy()
        extra = {}  # the algorithm's state, by its declared fields
        if alg.opponent == "optimistic":
            extra["previous_logits"] = previous
        if alg.anchor == "magnet":
            extra["magnet_logits"] = magnet
        if alg.history_length > 1:
            extra.update(history_logits=history, history_weights=alg.history_weights)
        theta, previous = alg.closed_form(theta, ref, P, eta, beta, **extra), theta
        history = [theta] + history[:-1]
        gaps.append(duality_gap(P, theta, ref, beta))
    return np.array(gaps).T


@pytest.mark.parametrize("name", [name for name, alg in ALGORITHMS.items() if "tabular/exact" in alg.simulated])
def test_exact_tabular_kernel_equals_closed_form(games, name):
    P, ref = games
    beta, lr, steps = 0.1, 0.05, 12
    eta = eta_from_lr(lr, beta, P.shape[1])
    res = simulate(P, ref, [name], beta=beta, lr=lr, iterations=steps, magnet_period=5, progress=False)
    expected = _closed_form_trajectory(name, P, ref, eta, beta, steps, magnet_period=5)
    got = res.duality_gap[name]
    assert got.shape == (4, steps + 1)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-13)
    assert np.all(np.abs(np.diff(got, axis=1)) > 0)  # the policy moved


def test_eta_and_lr_give_the_same_run(games):
    P, ref = games
    a = simulate(P, ref, ["egpo"], beta=0.05, lr=0.03, iterations=20, progress=False)
    b = simulate(P, ref, ["egpo"], beta=0.05, eta=eta_from_lr(0.03, 0.05, 6), iterations=20, progress=False)
    np.testing.assert_allclose(a.duality_gap["egpo"], b.duality_gap["egpo"], rtol=1e-12)


def _torch_neural_step(name, P, ref_logp, network, beta, lr, shared):
    """One SGD step (or the extragradient scheme) of the torch loss on NeuralPolicy; returns new logits."""
    from egpo_core.schemes import step

    alg = get_algorithm(name)
    policy = NeuralPolicy.from_arrays(network["input"], network["weights"], network["biases"], shared=shared)
    optimizer = torch.optim.SGD(policy.parameters(), lr=lr)
    Pt, ref_t = torch.tensor(P), torch.tensor(ref_logp)
    n = P.shape[1]
    eta_beta = 4 * lr / n

    def make_loss(opponent_probs=None):
        return exact_loss(alg, policy(), ref_t, Pt, beta, opponent_probs=opponent_probs, mixture=eta_beta, eta_beta=eta_beta)

    step(alg, policy, optimizer, make_loss)
    with torch.no_grad():
        return policy.logits().numpy()


@pytest.mark.parametrize("name", ["oipo1", "egpo", "oipo2", "nash_md", "nash_md_pg"])
@pytest.mark.parametrize("shared", [False, True])
def test_exact_neural_kernel_equals_torch_autograd(name, shared):
    inst = reference_instances(3, runs=3, num_actions=8, policy="neural", hidden_dim=4)
    network = inst.network
    if not shared:  # per-run weights that differ between runs
        network = neural_init(3, 8, hidden_dim=4, depth=3, seed=11)
        network["biases"] = [b + 0.1 for b in network["biases"]]
    ref = network_logits(network)
    beta, lr = 0.1, 0.05
    res = simulate(
        inst.P, ref, [name], beta=beta, lr=lr, iterations=1, policy="neural", network=network,
        conventions="reference" if shared else "default", mixture=4 * lr / 8, progress=False,
    )
    logits = _torch_neural_step(name, inst.P, log_softmax(ref, axis=-1), network, beta, lr, shared)
    np.testing.assert_allclose(res.duality_gap[name][:, 1], duality_gap(inst.P, logits, ref, beta), rtol=1e-10, atol=1e-13)


def _kernel_gradient_inputs(P, theta, ref, sigma_logits, previous_logits):
    logp, logp_ref = log_softmax(theta), log_softmax(ref)
    pi, sigma, prev = softmax(theta), softmax(sigma_logits), softmax(previous_logits)
    return logp, pi, P @ pi, logp_ref, sigma, prev


_SAMPLED_CASES = [(name, False) for name in ("oipo1", "oipo2", "nash_md", "nash_md_pg", "sppo", "omwu", "mpo")]
_SAMPLED_CASES += [(name, True) for name in ("oipo1", "nash_md", "sppo", "omwu", "mpo")]  # pairs y, y' ~ π_t: ipo family


@pytest.mark.parametrize("name, pair_from_policy", _SAMPLED_CASES)
def test_sampled_kernel_gradient_is_unbiased(name, pair_from_policy):
    """Mean of many sampled logit gradients = the exact one (within 5 standard errors), and the exact
    kernel gradient equals torch autograd of losses.exact_loss."""
    alg = ALGORITHMS[name]
    rng = np.random.default_rng(3)
    n, beta, weight = 7, 0.2, alg.loss_weight(0.3)
    P = random_games(1, n, rng)[0]
    theta, ref, prev, magnet = (rng.normal(size=n) for _ in range(4))
    c = 0.3
    sigma_logits = (1 - c) * log_softmax(theta) + c * log_softmax(ref) if alg.opponent == "mixture" else theta
    logp, pi, s, logp_ref, sigma, prev_pi = _kernel_gradient_inputs(P, theta, ref, sigma_logits, prev)
    anchor = {"reference": logp_ref, "current": logp, "magnet": log_softmax(magnet)}[alg.anchor]
    loss_code = _kernel.LOSS_CODES[alg.loss]
    optimistic = alg.opponent == "optimistic"

    target = P @ sigma
    if optimistic:
        target = 2 * target - P @ prev_pi
    exact = np.empty(n)
    policy_pairs, pairwise = alg.loss == "ipo2", alg.opponent == "pairwise"
    _kernel._exact_gradient(loss_code, policy_pairs, logp, pi, anchor, s if pairwise else target, 0.5, beta, weight, exact)

    if not pair_from_policy:  # torch oracle for the exact gradient
        theta_t = torch.tensor(theta, requires_grad=True)
        loss = exact_loss(
            alg, torch.log_softmax(theta_t, -1)[None], torch.tensor(ref)[None], torch.tensor(P)[None], beta,
            mixture=c, eta_beta=0.3, magnet_logp=torch.tensor(magnet)[None], previous_probs=torch.tensor(prev_pi)[None],
        )
        loss.backward()
        np.testing.assert_allclose(exact, theta_t.grad.numpy(), rtol=1e-10, atol=1e-12)
    else:  # the exact gradient with pairs from π_t: 4 π_y Σ_y' π_y' (D_y − D_y' − (T_y − T_y')/β)
        d = logp - anchor - target / beta
        exact = weight * 4 * pi * (d - pi @ d)

    draws, samples = 400, 500
    PT = np.ascontiguousarray(P.T)  # the kernel reads P(y ≻ y′) from the stored transpose, at [y′, y]
    state = np.array([np.uint64(12345)], dtype=np.uint64)
    grads = np.empty((draws, n))
    g = np.empty(n)
    tables = [np.empty((2, n)) for _ in range(3)]
    for table, dist in zip(tables, (pi, sigma, prev_pi)):
        _kernel._build_sampler(dist, table, np.empty(n, dtype=np.int64))
    for i in range(draws):
        _kernel._sampled_gradient(loss_code, pairwise, optimistic, policy_pairs or pair_from_policy, samples, PT, logp,
                                  pi, anchor, *tables, beta, weight, state, 0, g, np.empty(n))
        grads[i] = g
    mean, se = grads.mean(0), grads.std(0, ddof=1) / np.sqrt(draws)
    assert np.all(np.abs(mean - exact) <= 5 * se + 1e-12), (mean, exact, se)
    assert np.max(se) < 0.1 * np.max(np.abs(exact))  # the test has power


@pytest.mark.parametrize(
    "weights",
    [[0.5, 0.5], [1.0, 0.0, 3.0], [0.0] * 6 + [2.0], list(np.arange(1.0, 40.0) ** 2), [0.0] * 40 + [1.0, 3.0]],
)
def test_categorical_sampler_draws_the_distribution(weights):
    """Frequencies of 200k draws (cumulative-sum scan for N ≤ 32, alias table above) match w / Σw within
    5 standard errors; zero weights are never drawn."""
    w = np.array(weights)
    p = w / w.sum()
    table = np.empty((2, w.size))
    _kernel._build_sampler(w, table, np.empty(w.size, dtype=np.int64))
    state = np.array([np.uint64(99)], dtype=np.uint64)
    draws = 200_000
    counts = np.bincount([_kernel._sample(table, _kernel._next_uniform(state, 0)) for _ in range(draws)], minlength=w.size)
    freq = counts / draws
    se = np.sqrt(p * (1 - p) / draws)
    assert np.all(np.abs(freq - p) <= 5 * se + 1e-12)
    assert np.all(counts[p == 0] == 0)


@pytest.mark.parametrize("weights", [[0.2, 0.0, 0.5, 0.3], [0.0, 1.0, 0.0], [3.0, 1.0, 0.0, 0.0], [1.0] * 32, [0.5]])
def test_scan_sampler_returns_the_first_cumulative_sum_above_the_target(weights):
    """N ≤ 32: a draw with uniform u is the first index whose cumulative sum exceeds u·Σw, capped at N − 1,
    i.e. searchsorted(cumsum, u·Σw, 'right') clipped; checked at random u, at u that land exactly on the sums
    (ties go past the tied sum) and at u below 1 by one ulp (the cap)."""
    w = np.array(weights)
    table = np.empty((2, w.size))
    _kernel._build_sampler(w, table, np.empty(w.size, dtype=np.int64))
    cumsum = table[0].copy()
    total = cumsum[-1]
    exact = [c / total for c in cumsum if c < total and (c / total) * total == c]  # targets equal to a sum
    us = np.concatenate([np.random.default_rng(2).random(2000), exact, [0.0, np.nextafter(1.0, 0.0)]])
    drawn = np.array([_kernel._sample(table, u) for u in us])
    expected = np.minimum(np.searchsorted(cumsum, us * total, side="right"), w.size - 1)
    np.testing.assert_array_equal(drawn, expected)
    assert np.all(w[drawn] > 0)


def test_claim_hands_out_each_index_once_across_threads():
    """run_chunk's claims: _fetch_add (an atomic fetch-and-add) on one counter holding a front count (low 32 bits)
    and a back count (high 32 bits); over a parallel loop, iteration 0 claiming from the front and the others
    from the back, every index below the count is claimed exactly once, whichever thread claims it."""
    import numba

    @numba.njit(parallel=True)
    def claim_all(count, owner, counter):
        for w in numba.prange(count):
            front = w == 0
            while True:
                before = _kernel._fetch_add(counter, np.int64(0), np.int64(1) if front else np.int64(1) << 32)
                ahead, behind = before & 0xFFFFFFFF, before >> 32
                if ahead + behind >= count:
                    break
                owner[ahead if front else count - 1 - behind] += 1

    count = 5000
    owner = np.zeros(count, dtype=np.int64)
    counter = np.zeros(1, dtype=np.int64)
    claim_all(count, owner, counter)
    np.testing.assert_array_equal(owner, np.ones(count, dtype=np.int64))
    # each of the count iterations ended with one claim past the end: count + count claims in all
    assert (counter[0] & 0xFFFFFFFF) + (counter[0] >> 32) == 2 * count


def test_sampled_runs_are_deterministic_and_independent_of_other_algorithms(games):
    P, ref = games
    kw = dict(beta=0.1, lr=0.05, iterations=30, gradient="sampled", num_samples=20, progress=False)
    a = simulate(P, ref, ["egpo", "nash_md"], seed=1, **kw)
    b = simulate(P, ref, ["nash_md"], seed=1, **kw)
    c = simulate(P, ref, ["nash_md"], seed=2, **kw)
    np.testing.assert_array_equal(a.duality_gap["nash_md"], b.duality_gap["nash_md"])
    assert not np.allclose(b.duality_gap["nash_md"][:, 1:], c.duality_gap["nash_md"][:, 1:])


def test_sampled_gradient_tracks_exact_with_many_samples(games):
    P, ref = games
    kw = dict(beta=0.1, lr=0.05, iterations=40, progress=False)
    exact = simulate(P, ref, ["egpo", "oipo2"], **kw)
    sampled = simulate(P, ref, ["egpo", "oipo2"], gradient="sampled", num_samples=20000, **kw)
    for name in ("egpo", "oipo2"):
        # Sampling noise with 20k samples per step: about 2e-4 in the gap, whose scale here is 1e-3 to 1e-1.
        np.testing.assert_allclose(sampled.duality_gap[name], exact.duality_gap[name], rtol=0.05, atol=5e-4)


def test_sweep_equals_separate_runs(games):
    P, ref = games
    grid = sweep(P, ref, ["egpo", "oipo1"], betas=[0.1, 0.05], lrs=[0.02, 0.04], seeds=[0], iterations=25, progress=False)
    assert len(grid.configs) == 4
    for i, cfg in grid.configs.iterrows():
        one = simulate(P, ref, ["egpo", "oipo1"], beta=cfg["beta"], lr=cfg["lr"], iterations=25, progress=False)
        for name in ("egpo", "oipo1"):
            np.testing.assert_allclose(grid.duality_gap[name][i], one.duality_gap[name], rtol=1e-12)


def test_egpo_gap_falls_at_least_linearly():
    """log Gap(π_t) falls with slope no worse than 0.5·log(1 − ηβ) per step (theory: about log(1 − ηβ))."""
    rng = np.random.default_rng(11)
    P, ref = random_games(8, 10, rng), rng.normal(size=(8, 10))
    beta, eta = 0.1, 0.5
    res = simulate(P, ref, ["egpo"], beta=beta, eta=eta, iterations=400, progress=False)
    gap = res.duality_gap["egpo"]
    t = np.arange(50, 250)
    slopes = np.polyfit(t, np.log(gap[:, t]).T, 1)[0]
    assert np.all(slopes < 0.5 * np.log(1 - eta * beta)), slopes


def test_paper_preset_egpo_converges_and_nash_md_pg_does_not():
    """The paper's exact tabular β = 0.01 setting: EGPO reaches 1e-6 in 10/10 runs within 5k steps; Nash-MD-PG stays above 1e-2."""
    res = get_preset("exact-tabular-beta0.01").run(["egpo", "nash_md_pg"], progress=False)
    assert res.duality_gap["egpo"].shape == (10, 5001)
    assert np.all(np.min(res.duality_gap["egpo"], axis=1) < 1e-6)
    assert np.all(res.duality_gap["nash_md_pg"] > 1e-2)


def test_reference_conventions_change_only_what_they_document(games):
    P, ref = games
    kw = dict(beta=0.1, lr=0.05, iterations=20, progress=False)
    default = simulate(P, ref, ["egpo", "nash_md"], **kw)
    reference = simulate(P, ref, ["egpo", "nash_md"], conventions="reference", **kw)
    np.testing.assert_array_equal(default.duality_gap["egpo"], reference.duality_gap["egpo"])
    assert not np.allclose(default.duality_gap["nash_md"][:, 1:], reference.duality_gap["nash_md"][:, 1:])
    explicit = simulate(P, ref, ["nash_md"], mixture=2 * 0.05 / 6, **kw)
    np.testing.assert_allclose(explicit.duality_gap["nash_md"], reference.duality_gap["nash_md"], rtol=1e-12)


@pytest.mark.slow
def test_reference_sampled_nash_md_stalls():
    """The reference implementation's mixture normalized over runs stalls sampled Nash-MD at a gap
    ≈ 0.2; correctly normalized it reaches ≈ 2e-3 (the reference implementation re-run, full 100k-step preset)."""
    preset = get_preset("sampled-tabular-beta0.01")
    kw = dict(progress=False, record_every=1000)
    correct = preset.run(["nash_md"], **kw).duality_gap["nash_md"][:, -1]
    buggy = preset.run(["nash_md"], conventions="reference", **kw).duality_gap["nash_md"][:, -1]
    assert 0.1 < np.median(buggy) < 0.4
    assert np.median(correct) < 5e-3


def test_record_every_and_extra_metrics(games):
    P, ref = games
    res = simulate(P, ref, ["egpo"], beta=0.1, lr=0.05, iterations=25, record_every=10,
                   metrics=("duality_gap", "exploitability", "kl_to_equilibrium"), progress=False)
    np.testing.assert_array_equal(res.steps, [0, 10, 20, 25])
    full = simulate(P, ref, ["egpo"], beta=0.1, lr=0.05, iterations=25, progress=False)
    np.testing.assert_allclose(res.duality_gap["egpo"], full.duality_gap["egpo"][:, [0, 10, 20, 25]], rtol=1e-12)
    assert np.all(res.exploitability["egpo"] >= -1e-12)
    kl = res.kl_to_equilibrium["egpo"]
    assert np.all(kl[:, -1] < kl[:, 0])  # EGPO approaches π*_β


def test_tidy_dataframe_and_save(games, tmp_path):
    P, ref = games
    res = simulate(P, ref, ["egpo", "oipo1"], beta=0.1, lr=0.05, iterations=5, progress=False)
    frame = res.to_dataframe()
    assert {"algorithm", "run", "step", "metric", "value"} <= set(frame.columns)
    assert len(frame) == 2 * 4 * 6
    row = frame[(frame.algorithm == "oipo1") & (frame.run == 2) & (frame.step == 3)]
    assert row["value"].item() == res.duality_gap["oipo1"][2, 3]
    from egpo_core.results import load_result

    res.save(tmp_path)
    back = load_result(tmp_path)
    np.testing.assert_array_equal(back.values["duality_gap"], res.values["duality_gap"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(algorithms=["egpo", "nope"]), "unknown algorithm 'nope'"),
        (dict(beta=0.0), "beta must be positive"),
        (dict(beta=-1.0), "beta=-1"),
        (dict(lr=None), "exactly one of lr"),
        (dict(eta=0.3), "exactly one of lr"),
        (dict(policy="table"), "policy must be"),
        (dict(gradient="exactly"), "gradient must be"),
        (dict(iterations=0), "iterations must be"),
        (dict(conventions="paper"), "conventions must be"),
        (dict(ref_logits=np.zeros((4, 5))), r"ref_logits has shape \(4, 5\)"),
    ],
)
def test_bad_input_raises_clear_errors(games, kwargs, message):
    P, ref = games
    call = dict(P=P, ref_logits=ref, algorithms=["egpo"], beta=0.1, lr=0.05, iterations=3, progress=False)
    call.update(kwargs)
    with pytest.raises(ValueError, match=message):
        simulate(call.pop("P"), call.pop("ref_logits"), call.pop("algorithms"), **call)


def test_invalid_preference_matrix_is_rejected(games):
    P, ref = games
    bad = P.copy()
    bad[1, 2, 3] = 0.9  # P + Pᵀ ≠ 1
    with pytest.raises(ValueError, match="run 1"):
        simulate(bad, ref, ["egpo"], beta=0.1, lr=0.05, iterations=3, progress=False)


def test_reference_neural_needs_the_shared_network(games):
    P, ref = games
    with pytest.raises(ValueError, match="share"):
        simulate(P, ref, ["egpo"], beta=0.1, lr=0.05, iterations=3, policy="neural", conventions="reference", progress=False)
    inst = reference_instances(3, runs=2, num_actions=5, policy="neural", hidden_dim=4)
    with pytest.raises(ValueError, match="init_logits"):
        simulate(inst.P, inst.ref_logits, ["egpo"], beta=0.1, lr=0.05, iterations=3, policy="neural",
                 conventions="reference", network=inst.network, init_logits=np.zeros((2, 5)), progress=False)


def test_paper_algorithms_are_registered():
    assert set(PAPER_ALGORITHMS) <= set(ALGORITHMS)
    assert {"mpo", "sppo", "omwu"} <= set(ALGORITHMS)


@pytest.mark.parametrize("case", ["tabular", "neural"])
def test_results_do_not_depend_on_the_thread_count(tmp_path, case):
    """Per-trajectory random streams: one thread and two threads give bit-identical sampled runs. Tabular:
    13 groups, each claimed whole. Neural under the reference conventions: one group per algorithm (a shared
    network), 3 groups for 2 threads, so run_chunk cuts each chunk's 35 steps into 2 slices that either
    thread takes (kernel.SLICED_BELOW, MIN_SLICE_STEPS)."""
    import subprocess
    import sys

    if case == "neural":  # the neural run is sliced: 3 groups < SLICED_BELOW·2, a chunk of 35 steps ≥ 2 slices
        assert 3 < _kernel.SLICED_BELOW * 2 and 35 // _kernel.MIN_SLICE_STEPS >= 2
    call = {
        "tabular": "P, ref = random_games(6, 8, rng), rng.normal(size=(6, 8))\n"
                   "r = simulate(P, ref, ['egpo', 'nash_md', 'oipo2'], beta=0.1, lr=0.05, iterations=50,\n"
                   "             gradient='sampled', num_samples=30, conventions='reference', seed=3, progress=False)\n",
        "neural": "from egpo_core.reference_draws import reference_instances\n"
                  "inst = reference_instances(7, runs=3, num_actions=6, policy='neural', hidden_dim=4)\n"
                  "r = simulate(inst.P, inst.ref_logits, ['egpo', 'nash_md', 'oipo2'], beta=0.1, lr=0.01,\n"
                  "             iterations=3500, policy='neural', hidden_dim=4, network=inst.network,\n"
                  "             gradient='sampled', num_samples=8, conventions='reference', seed=3, progress=False)\n",
    }[case]
    script = (
        "import numpy as np, sys\n"
        "from egpo_core import simulate\n"
        "from egpo_core.games import random_games\n"
        "rng = np.random.default_rng(5)\n"
        + call +
        "np.save(sys.argv[1], r.values['duality_gap'])\n"
    )
    outputs = []
    for threads in ("1", "2"):
        path = tmp_path / f"gap{threads}.npy"
        env = {**__import__("os").environ, "NUMBA_NUM_THREADS": threads}
        done = subprocess.run([sys.executable, "-c", script, str(path)], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        outputs.append(np.load(path))
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert np.all(np.isfinite(outputs[0]))


def test_average_iterate_metrics_match_the_closed_form_average(games):
    """π̄_t = Σ_{s≤t} π_s/(t+1) from the closed form; its gap and exploitability as recorded (the run
    spans many chunks, and records every 7th step)."""
    from egpo_core.metrics import exploitability

    P, ref = games
    beta, lr, steps = 0.1, 0.05, 250
    eta = eta_from_lr(lr, beta, P.shape[1])
    res = simulate(P, ref, ["sppo"], beta=beta, lr=lr, iterations=steps, record_every=7,
                   metrics=("duality_gap", "average_duality_gap", "average_exploitability"), progress=False)
    theta, total = ref.copy(), softmax(ref, axis=-1)
    expected_gap, expected_expl = {0: duality_gap(P, ref, ref, beta)}, {0: exploitability(P, ref)}
    for t in range(1, steps + 1):
        theta = ALGORITHMS["sppo"].closed_form(theta, ref, P, eta, beta)
        total = total + softmax(theta, axis=-1)
        if t in res.steps:
            avg_logits = np.log(total / (t + 1))
            expected_gap[t] = duality_gap(P, avg_logits, ref, beta)
            expected_expl[t] = exploitability(P, avg_logits)
    np.testing.assert_allclose(res.average_duality_gap["sppo"], np.array([expected_gap[t] for t in res.steps]).T, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(res.metric("average_exploitability")["sppo"], np.array([expected_expl[t] for t in res.steps]).T, rtol=1e-9, atol=1e-13)


def test_sppo_average_iterate_approaches_the_nash_equilibrium():
    """On rock–paper–scissors multiplicative weights cycles in the last iterate while its average
    converges to the uniform Nash equilibrium (exploitability → 0)."""
    from egpo_core.games import rock_paper_scissors

    P = rock_paper_scissors(1)
    ref = np.array([[1.0, 0.0, -1.0]])
    res = simulate(P, ref, ["sppo"], beta=1e-3, eta=0.5, iterations=4000, record_every=100,
                   metrics=("duality_gap", "exploitability", "average_exploitability"), progress=False)
    last, average = res.exploitability["sppo"][0], res.metric("average_exploitability")["sppo"][0]
    assert average[-1] < 0.02 < np.min(last[-10:])


def test_the_package_attribute_simulate_is_the_function_whatever_was_imported_first():
    """The functions live in egpo_core.simulator; no submodule is named simulate or sweep, so importing
    the simulator (through plotting, presets, ...) cannot rebind the package's attributes."""
    code = ("import egpo_core.plotting, egpo_core.presets, egpo_core.simulator, egpo_core; "
            "from egpo_core import simulate, sweep; import types; "
            "print(isinstance(simulate, types.FunctionType), isinstance(sweep, types.FunctionType), "
            "egpo_core.simulate is egpo_core.simulator.simulate)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "True"]
    import egpo_core

    assert not hasattr(egpo_core, "_Package") and type(egpo_core) is types.ModuleType


def test_the_version_is_a_leaf_the_simulator_reads():
    import ast

    import egpo_core
    from egpo_core import version

    assert egpo_core.__version__ == version.__version__
    for module in ("simulator.py", "cli.py"):
        tree = ast.parse(Path(egpo_core.__file__).with_name(module).read_text())
        from_root = [alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1
                     and node.module is None for alias in node.names]
        assert "__version__" not in from_root, module  # the root is not imported for its version
