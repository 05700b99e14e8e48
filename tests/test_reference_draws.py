"""Tests of egpo_core.reference_draws (the reference implementation's random draws, bit for bit; the
paper presets' draws stored, the same on every CPU) and egpo_core.network (the paper's MLP: format,
initialization, forward pass, the simulator's layout)."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from egpo_core import reference_draws
from egpo_core.network import check_network, network_logits, network_parameters, neural_init
from egpo_core.presets import PRESETS, write_preset_draws
from egpo_core.reference_draws import reference_instances, stored_draws_path, write_draws

# the presets' distinct argument sets: (seed, runs, N, policy, hidden_dim, depth)
PRESET_ARGUMENTS = list(dict.fromkeys(p.draw_arguments() for p in PRESETS.values()))
VECTORISED = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def assert_constant_sum(P: np.ndarray) -> None:
    """P + Pᵀ = 1 exactly, entries in [0, 1], diagonal ½."""
    assert P.dtype == np.float64
    assert np.array_equal(P + np.swapaxes(P, -1, -2), np.ones_like(P))
    assert P.min() >= 0.0 and P.max() <= 1.0
    assert np.all(np.diagonal(P, axis1=-2, axis2=-1) == 0.5)


class TestReferenceInstances:
    def test_tabular_draw_order(self):
        seed, runs, n = 2018011309, 9, 10  # not stored: drawn with torch here
        assert not stored_draws_path(seed, runs, n).is_file()
        inst = reference_instances(seed, runs=runs, num_actions=n)
        assert inst.network is None
        assert inst.P.shape == (runs, n, n) and inst.ref_logits.shape == (runs, n)
        assert inst.P.dtype == np.float64 and inst.ref_logits.dtype == np.float64
        # re-derive with the global RNG, as the reference does
        state = torch.get_rng_state()
        try:
            torch.manual_seed(seed)
            logits = torch.zeros(runs, n, 1).normal_(0, 1)
            lower = torch.rand((runs, n, n))
        finally:
            torch.set_rng_state(state)
        np.testing.assert_array_equal(inst.ref_logits, logits[..., 0].numpy().astype(np.float64))
        rows, cols = np.tril_indices(n, k=-1)
        low = lower.numpy().astype(np.float64)
        np.testing.assert_array_equal(inst.P[:, rows, cols], low[:, rows, cols])
        np.testing.assert_array_equal(inst.P[:, cols, rows], 1.0 - low[:, rows, cols])
        assert_constant_sum(inst.P)

    def test_pinned_values_of_the_paper_seed(self):
        # regression guard on the stored draws (the draw order and torch's Mersenne Twister stream)
        inst = reference_instances(2018011309)
        assert inst.ref_logits[0, :3] == pytest.approx([-1.04087865, 1.27532756, 1.84473431], abs=1e-7)
        assert inst.P[0, 1, 0] == pytest.approx(0.74345791, abs=1e-7)
        assert inst.P[0, 2, 0] == pytest.approx(0.08542973, abs=1e-7)

    @pytest.mark.parametrize("policy", ["tabular", "neural"])
    def test_caller_rng_untouched_and_deterministic(self, policy):
        torch.manual_seed(99)
        expected = torch.rand(3)
        torch.manual_seed(99)
        a = reference_instances(5, runs=3, num_actions=6, policy=policy)
        np.testing.assert_array_equal(torch.rand(3).numpy(), expected.numpy())
        b = reference_instances(5, runs=3, num_actions=6, policy=policy)
        c = reference_instances(6, runs=3, num_actions=6, policy=policy)
        np.testing.assert_array_equal(a.P, b.P)
        np.testing.assert_array_equal(a.ref_logits, b.ref_logits)
        assert not np.array_equal(a.P, c.P)

    def test_neural_draw_order_and_forward_pass(self):
        seed, runs, n, hidden = 2018011309, 9, 100, 10  # not stored: drawn with torch here
        assert not stored_draws_path(seed, runs, n, "neural", hidden, 3).is_file()
        inst = reference_instances(seed, runs=runs, num_actions=n, policy="neural", hidden_dim=hidden, depth=3)
        net = inst.network
        assert net["input"].shape == (runs, hidden)
        assert [w.shape for w in net["weights"]] == [(hidden, hidden), (hidden, hidden), (n, hidden)]
        assert [b.shape for b in net["biases"]] == [(hidden,), (hidden,), (n,)]
        assert all(np.all(b == 0.0) for b in net["biases"])
        assert all(a.dtype == np.float64 for a in [net["input"], *net["weights"], *net["biases"]])
        # ref_logits are a forward pass of the returned network (computed independently here)
        h = np.maximum(net["input"] @ net["weights"][0].T, 0.0)
        h = np.maximum(h @ net["weights"][1].T, 0.0)
        np.testing.assert_allclose(inst.ref_logits, h @ net["weights"][2].T, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(inst.ref_logits, network_logits(net))
        # re-derive the reference's construction with the global RNG
        state = torch.get_rng_state()
        try:
            torch.manual_seed(seed)
            model = torch.nn.Sequential(
                torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                torch.nn.Linear(hidden, n),
            )
            v = torch.normal(0, 1, (runs, hidden))
            linears = [m for m in model if isinstance(m, torch.nn.Linear)]
            for layer in linears:
                torch.nn.init.xavier_normal_(layer.weight)
                torch.nn.init.zeros_(layer.bias)
            lower = torch.rand((runs, n, n))
            with torch.no_grad():
                out32 = model(v).numpy()
        finally:
            torch.set_rng_state(state)
        np.testing.assert_array_equal(net["input"], v.numpy().astype(np.float64))
        for layer, w in zip(linears, net["weights"]):
            np.testing.assert_array_equal(w, layer.weight.detach().numpy().astype(np.float64))
        # the reference's float32 forward pass agrees with our float64 one to float32 rounding
        np.testing.assert_allclose(inst.ref_logits, out32, rtol=0, atol=1e-5)
        rows, cols = np.tril_indices(n, k=-1)
        np.testing.assert_array_equal(inst.P[:, rows, cols], lower.numpy()[:, rows, cols].astype(np.float64))
        assert_constant_sum(inst.P)

    def test_shared_weights_xavier_scale(self):
        inst = reference_instances(1, runs=4, num_actions=100, policy="neural", hidden_dim=10)
        w = inst.network["weights"][2]
        # xavier normal: std = sqrt(2 / (fan_in + fan_out)) = sqrt(2/110) ≈ 0.135
        assert abs(w.std() - np.sqrt(2 / 110)) < 0.015
        assert len({r.tobytes() for r in inst.ref_logits}) == 4  # runs differ through the input only


def instances_sha256(inst) -> str:
    """One hash of every returned array's bytes."""
    h = hashlib.sha256(inst.P.tobytes() + inst.ref_logits.tobytes())
    for a in [] if inst.network is None else [inst.network["input"], *inst.network["weights"], *inst.network["biases"]]:
        h.update(a.tobytes())
    return h.hexdigest()


SHA_SOURCE = inspect.getsource(instances_sha256)  # the same hash in the subprocesses
STORED_SHA256 = {args: instances_sha256(reference_instances(*args)) for args in PRESET_ARGUMENTS}


class TestStoredDraws:
    """The presets' draws are data: torch's AVX2 values, returned on every CPU."""

    def test_every_preset_is_stored_and_needs_no_torch(self):
        assert [stored_draws_path(*args).is_file() for args in PRESET_ARGUMENTS] == [True, True]
        sizes = [stored_draws_path(*args).stat().st_size for args in PRESET_ARGUMENTS]
        assert sum(sizes) < 300_000, sizes
        code = (
            "import hashlib, sys\n"
            "sys.modules['torch'] = None\n"
            "from egpo_core.presets import PRESETS\n" + SHA_SOURCE +
            "print({name: instances_sha256(p.instances()) for name, p in PRESETS.items()})\n"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        expected = {name: STORED_SHA256[p.draw_arguments()] for name, p in PRESETS.items()}
        assert result.stdout.strip() == str(expected)

    @pytest.mark.skipif(not VECTORISED, reason=f"torch's CPU path here is {torch.backends.cpu.get_cpu_capability()}"
                        ", not AVX2/AVX512: its normal_ draws differ from the stored (AVX2) ones in the last bits")
    def test_stored_draws_are_torchs_fresh_avx2_draws(self, tmp_path):
        for path in write_preset_draws(tmp_path):
            with np.load(path) as fresh, np.load(reference_draws.REFERENCE_DATA / path.name) as stored:
                assert fresh.files == stored.files
                for key in fresh.files:
                    assert fresh[key].dtype == stored[key].dtype and fresh[key].shape == stored[key].shape, key
                    if key != "drawn_by":  # torch's version may differ; its draws may not
                        assert fresh[key].tobytes() == stored[key].tobytes(), (path.name, key)
                assert "AVX2 CPU path" in str(stored["drawn_by"])
        # and reference_instances returns them unchanged: the torch route gives the same bytes here
        for args in PRESET_ARGUMENTS:
            fresh = reference_draws._instances(reference_draws._torch_draws(*reference_draws._check_arguments(*args)),
                                               args[2], args[3], args[5])
            assert instances_sha256(fresh) == STORED_SHA256[args]

    def test_scalar_cpu_path_still_gets_the_stored_values(self):
        """Under ATEN_CPU_CAPABILITY=default torch's normal_ takes its scalar Box–Muller: a fresh draw
        there moves θ_ref (not P) by < 1e-6, while reference_instances returns the stored bytes."""
        code = (
            "import hashlib, json, torch\n"
            "import numpy as np\n"
            "from egpo_core import reference_draws as rd\n" + SHA_SOURCE +
            f"out = {{'capability': torch.backends.cpu.get_cpu_capability(), 'sets': []}}\n"
            f"for args in {PRESET_ARGUMENTS!r}:\n"
            "    stored = rd.reference_instances(*args)\n"
            "    fresh = rd._instances(rd._torch_draws(*rd._check_arguments(*args)), args[2], args[3], args[5])\n"
            "    out['sets'].append({'stored': instances_sha256(stored), 'fresh': instances_sha256(fresh),\n"
            "                        'P_equal': bool(np.array_equal(stored.P, fresh.P)),\n"
            "                        'moved': int(np.sum(stored.ref_logits != fresh.ref_logits)),\n"
            "                        'max_dtheta': float(np.max(np.abs(stored.ref_logits - fresh.ref_logits)))})\n"
            "print(json.dumps(out))\n"
        )
        env = os.environ | {"ATEN_CPU_CAPABILITY": "default"}
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
        assert out["capability"] == "DEFAULT"
        for args, found in zip(PRESET_ARGUMENTS, out["sets"]):
            assert found["stored"] == STORED_SHA256[args], args  # the same bytes as here
            assert found["fresh"] != STORED_SHA256[args], args  # torch's own draw there is not
            assert found["P_equal"], args  # rand takes no per-CPU path
            assert found["moved"] > 0 and 0 < found["max_dtheta"] < 1e-6, (args, found)

    def test_a_preset_refuses_missing_stored_draws(self, tmp_path, monkeypatch):
        monkeypatch.setattr(reference_draws, "REFERENCE_DATA", tmp_path)
        with pytest.raises(FileNotFoundError, match="preset exact-tabular-beta0.1: its stored draws .* are missing"):
            PRESETS["exact-tabular-beta0.1"].instances()

    def test_other_arguments_draw_with_torch_and_stored_files_are_read(self, tmp_path, monkeypatch):
        args = (5, 2, 4, "neural", 3, 2)
        assert not stored_draws_path(*args).is_file()
        drawn = reference_instances(*args)
        assert write_draws(tmp_path, *args).name == stored_draws_path(*args).name
        monkeypatch.setattr(reference_draws, "REFERENCE_DATA", tmp_path)
        assert stored_draws_path(*args).is_file()
        assert instances_sha256(reference_instances(*args)) == instances_sha256(drawn)
        # a stored file is checked against the arguments
        path = stored_draws_path(*args)
        np.savez(path, lower=np.zeros((2, 5), np.float32), input=np.zeros((2, 3), np.float32))
        with pytest.raises(ValueError, match=re.escape(f"stored draws {path} hold")):
            reference_instances(*args)


# ----------------------------------------------------------------------------------------------------
# the network


def test_neural_init_draw_order_and_scale():
    """W_1 … W_depth from default_rng(seed) in order (Xavier-normal), then v ~ N(0, 1); zero biases."""
    runs, n, hidden, depth, seed = 3, 7, 5, 3, 11
    net = neural_init(runs, n, hidden, depth, seed=seed)
    rng = np.random.default_rng(seed)
    dims = [hidden] * depth + [n]
    for layer in range(depth):
        std = np.sqrt(2.0 / (dims[layer] + dims[layer + 1]))
        expected = rng.normal(0.0, std, size=(runs, dims[layer + 1], dims[layer]))
        np.testing.assert_array_equal(net["weights"][layer], expected)
        np.testing.assert_array_equal(net["biases"][layer], np.zeros((runs, dims[layer + 1])))
    np.testing.assert_array_equal(net["input"], rng.normal(size=(runs, hidden)))
    big = neural_init(2, 200, hidden_dim=100, depth=2, seed=0)["weights"][1]
    assert abs(big.std() - np.sqrt(2 / 300)) < 0.01  # std of the estimate ≈ 1e-4


def test_forward_pass_by_hand_shared_and_per_run():
    net = neural_init(4, 6, hidden_dim=3, depth=3, seed=2)
    h = net["input"]
    for layer, (W, b) in enumerate(zip(net["weights"], net["biases"])):
        h = np.stack([W[r] @ h[r] + b[r] for r in range(4)])
        h = np.maximum(h, 0.0) if layer < 2 else h
    # einsum against per-run matrix products: other summation orders, equal up to rounding
    np.testing.assert_allclose(network_logits(net), h, rtol=0, atol=1e-12)
    shared = {"input": net["input"], "weights": [W[0] for W in net["weights"]], "biases": [b[0] for b in net["biases"]]}
    copied = {key: [np.broadcast_to(a, (4,) + a.shape) for a in shared[key]] for key in ("weights", "biases")}
    np.testing.assert_allclose(network_logits(shared), network_logits({"input": net["input"], **copied}),
                               rtol=0, atol=1e-12)  # broadcast strides: another einsum loop


def test_flat_layout_is_input_then_weights_and_biases_per_layer():
    net = neural_init(2, 4, hidden_dim=3, depth=2, seed=5)
    params, hidden, n_hidden = network_parameters(net, runs=2, num_actions=4)
    assert (hidden, n_hidden) == (3, 1)
    assert params.shape == (2, 3 + (9 + 3) + (12 + 4))
    for r in range(2):
        expected = np.concatenate([net["input"][r], net["weights"][0][r].ravel(), net["biases"][0][r],
                                   net["weights"][1][r].ravel(), net["biases"][1][r]])
        np.testing.assert_array_equal(params[r], expected)
    inst = reference_instances(0, runs=2, num_actions=4, policy="neural", hidden_dim=3, depth=2)
    shared, _, _ = network_parameters(inst.network, runs=2, num_actions=4)
    np.testing.assert_array_equal(shared[0, 3:], shared[1, 3:])  # shared weights copied to every run


NET = neural_init(2, 4, hidden_dim=3, depth=2, seed=0)


@pytest.mark.parametrize(
    "network, message",
    [
        ([1, 2], "network must be a dict with 'input', 'weights' and 'biases', got list"),
        ({"input": NET["input"]}, "network must be a dict with 'input', 'weights' and 'biases', got ['input']"),
        (NET | {"input": np.zeros(3)}, "network input must have shape (runs, hidden), got shape (3,)"),
        (NET | {"biases": NET["biases"][:1]}, "network needs as many biases as weights (≥ 1), got 2 and 1"),
        (NET | {"weights": [np.zeros((3, 4)), NET["weights"][1]]}, "network weights[0] must have shape (out, 3) or (2, out, 3)"),
        (NET | {"weights": [np.zeros((5, 3)), np.zeros((4, 5))], "biases": [np.zeros(5), np.zeros(4)]},
         "hidden layer weights[0] must be 3 × 3, got shape (5, 3)"),
        (NET | {"biases": [np.zeros(2), NET["biases"][1]]}, "network biases[0] has shape (2,), but weights[0] has shape (2, 3, 3)"),
        (NET | {"input": np.full((2, 3), np.nan)}, "network input must be finite"),
    ],
    ids=["not_dict", "missing", "input_ndim", "bias_count", "width", "hidden_square", "bias_shape", "nan"],
)
def test_check_network_names_the_bad_array(network, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        check_network(network)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: reference_instances(0, policy="cnn"), "policy must be 'tabular' or 'neural', got policy='cnn'"),
        (lambda: reference_instances(0, runs=0), "runs must be at least 1, got runs=0"),
        (lambda: reference_instances(1.5), "seed must be an integer, got seed=1.5"),
        (lambda: reference_instances(0, policy="neural", depth=0), "depth must be at least 1, got depth=0"),
        (lambda: network_parameters(NET, runs=3, num_actions=4), "network input has 2 runs, the games have 3"),
        (lambda: network_parameters(NET, runs=2, num_actions=5), "network output size 4 != number of actions 5"),
        (lambda: neural_init(2, 4, hidden_dim=0), "hidden_dim must be at least 1, got hidden_dim=0"),
    ],
)
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()
