"""egpo_core's pieces for the language-model driver: the extragradient state, the targets as data,
strict per-sequence losses, and the light package root.

Tolerances: parameter comparisons in float64 within 1e-12 (the same arithmetic in another order);
float32 comparisons within 1e-6.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
from torch import nn

from egpo_core.algorithms import ALGORITHMS, OPPONENT_TERMS, get_algorithm
from egpo_core.losses import (
    ipo_regression_loss,
    policy_gradient_advantage,
    policy_gradient_loss,
    regression_target,
)
from egpo_core.schemes import ExtragradientState, extragradient_step

F64 = torch.float64


class Quadratic(nn.Module):
    """A policy stand-in whose 'opponent' is its own parameter vector: L(θ; σ) = |θ − A σ|²."""

    def __init__(self, n: int = 5, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.theta = nn.Parameter(torch.randn(n, generator=g, dtype=F64))
        self.frozen = nn.Parameter(torch.randn(n, generator=g, dtype=F64), requires_grad=False)
        self.register_buffer("A", torch.randn(n, n, generator=g, dtype=F64))

    def loss(self, opponent: torch.Tensor | None) -> torch.Tensor:
        sigma = self.theta.detach() if opponent is None else opponent
        return ((self.theta + self.frozen - self.A @ sigma) ** 2).sum()


def make(seed: int = 0, lr: float = 0.05):
    model = Quadratic(seed=seed)
    optimizer = torch.optim.AdamW([model.theta], lr=lr, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 1.0 / (1 + k))
    return model, optimizer, scheduler


def warm_up(model, optimizer, scheduler, steps: int = 3):
    """A few plain steps so that Adam's moments and the schedule are not at their initial values."""
    for _ in range(steps):
        optimizer.zero_grad()
        model.loss(None).backward()
        optimizer.step()
        scheduler.step()


def one_step(model, optimizer, opponent):
    optimizer.zero_grad()
    model.loss(opponent).backward()
    optimizer.step()


def test_split_update_is_one_step_from_theta_t_against_the_half_step():
    """save → half step → opponent at θ_{t+½} → restore → full step equals one AdamW step from
    (θ_t, Adam state_t, lr_t) with the gradient against π_{t+½}, computed independently."""
    model, optimizer, scheduler = make()
    warm_up(model, optimizer, scheduler)
    oracle_model, oracle_opt, oracle_sched = copy.deepcopy((model, optimizer, scheduler))
    # independent: the half-step point from a throwaway copy, then one step of the untouched copy
    half_model, half_opt, _ = copy.deepcopy((model, optimizer, scheduler))
    one_step(half_model, half_opt, None)
    opponent = half_model.theta.detach().clone()
    one_step(oracle_model, oracle_opt, opponent)
    oracle_sched.step()

    state = ExtragradientState()
    assert state.phase == "half"
    state.save(model.parameters(), optimizer, scheduler)
    assert state.phase == "full"
    one_step(model, optimizer, None)
    scheduler.step()  # the trainer ticks after every optimizer step; restore undoes the half step's tick
    got_opponent = model.theta.detach().clone()
    state.restore(model.parameters(), optimizer, scheduler)
    assert state.phase == "half" and state.updates == 1
    one_step(model, optimizer, got_opponent)
    scheduler.step()

    torch.testing.assert_close(got_opponent, opponent, rtol=0, atol=1e-12)
    torch.testing.assert_close(model.theta, oracle_model.theta, rtol=0, atol=1e-12)
    assert scheduler.last_epoch == oracle_sched.last_epoch == 4  # 3 warm-up ticks + one per update
    assert optimizer.param_groups[0]["lr"] == oracle_opt.param_groups[0]["lr"]
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(
            optimizer.state[model.theta][key], oracle_opt.state[oracle_model.theta][key], rtol=0, atol=1e-12
        )


def test_without_restoring_the_optimizer_the_update_differs():
    """The check above can fail: restoring the parameters but not Adam's state gives another point."""
    model, optimizer, scheduler = make()
    warm_up(model, optimizer, scheduler)
    reference = copy.deepcopy(model)
    ref_opt = torch.optim.AdamW([reference.theta], lr=0.05, weight_decay=0.01)
    ref_opt.load_state_dict(optimizer.state_dict())
    extragradient_step(reference, ref_opt, reference.loss, opponent_fn=lambda m: m.theta.detach().clone())

    saved = model.theta.detach().clone()
    one_step(model, optimizer, None)
    opponent = model.theta.detach().clone()
    with torch.no_grad():
        model.theta.copy_(saved)  # parameters only
    one_step(model, optimizer, opponent)
    assert (model.theta - reference.theta).abs().max() > 1e-6  # vs 1e-12 agreement when restored


def test_state_dict_resumes_into_the_full_step(tmp_path):
    """A checkpoint between the two steps (through torch.save) resumes to the uninterrupted result."""
    model, optimizer, scheduler = make(seed=3)
    warm_up(model, optimizer, scheduler)
    straight = copy.deepcopy((model, optimizer, scheduler))

    state = ExtragradientState()
    state.save(model.parameters(), optimizer, scheduler)
    one_step(model, optimizer, None)
    scheduler.step()
    torch.save(
        {"eg": state.state_dict(), "model": model.state_dict(), "opt": optimizer.state_dict(), "sched": scheduler.state_dict()},
        tmp_path / "ckpt.pt",
    )
    # "kill": fresh objects, loaded from the checkpoint
    checkpoint = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    resumed, resumed_opt, resumed_sched = make(seed=99)
    resumed.load_state_dict(checkpoint["model"])
    resumed_opt.load_state_dict(checkpoint["opt"])
    resumed_sched.load_state_dict(checkpoint["sched"])
    resumed_state = ExtragradientState()
    resumed_state.load_state_dict(checkpoint["eg"])
    assert resumed_state.phase == "full"
    opponent = resumed.theta.detach().clone()
    resumed_state.restore(resumed.parameters(), resumed_opt, resumed_sched)
    one_step(resumed, resumed_opt, opponent)

    s_model, s_opt, _ = straight
    extragradient_step(s_model, s_opt, s_model.loss, opponent_fn=lambda m: m.theta.detach().clone())
    torch.testing.assert_close(resumed.theta, s_model.theta, rtol=0, atol=1e-12)


def test_snapshot_holds_trainable_parameters_only():
    model, optimizer, scheduler = make()
    state = ExtragradientState(offload=True)
    state.save(model.parameters(), optimizer)
    saved = state.state_dict()["parameters"]
    assert len(saved) == 1 and saved[0].shape == model.theta.shape  # not the frozen one, not the buffer
    frozen_before = model.frozen.detach().clone()
    one_step(model, optimizer, None)
    state.restore(model.parameters(), optimizer)
    assert torch.equal(model.frozen, frozen_before)


class MasterWeightsSGD(torch.optim.Optimizer):
    """SGD that, like a mixed-precision or ZeRO optimizer, steps fp32 master copies that it owns and
    writes them into the (bf16) parameters: restoring the parameters alone is undone at the next step.
    Its state_dict carries the masters, as DeepSpeed's does with its fp32 partitions."""

    def __init__(self, params, lr):
        super().__init__(params, {"lr": lr})
        self.masters = [p.detach().float().clone() for g in self.param_groups for p in g["params"]]

    @torch.no_grad()
    def step(self):
        params = [p for g in self.param_groups for p in g["params"]]
        for p, master in zip(params, self.masters):
            master -= self.param_groups[0]["lr"] * p.grad.float()
            p.copy_(master.to(p.dtype))

    def state_dict(self):
        return {**super().state_dict(), "masters": [m.clone() for m in self.masters]}

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        self.masters = [m.clone() for m in state_dict.pop("masters")]
        super().load_state_dict(state_dict)


def test_master_weights_are_restored_with_the_optimizer_state():
    torch.manual_seed(0)
    theta = nn.Parameter(torch.randn(6).to(torch.bfloat16))
    target = torch.randn(6)
    optimizer = MasterWeightsSGD([theta], lr=0.1)

    def loss(opponent):
        goal = target if opponent is None else target + opponent
        return ((theta.float() - goal) ** 2).sum()

    for _ in range(2):  # move the masters away from the initial parameters
        optimizer.zero_grad()
        loss(None).backward()
        optimizer.step()
    master_t = optimizer.masters[0].clone()
    state = ExtragradientState()
    state.save([theta], optimizer)
    optimizer.zero_grad()
    loss(None).backward()
    optimizer.step()
    opponent = theta.detach().float().clone()
    state.restore([theta], optimizer)
    torch.testing.assert_close(optimizer.masters[0], master_t, rtol=0, atol=0)
    grad_at_t = (2 * (theta.detach().float() - (target + opponent))).to(torch.bfloat16).float()  # a bf16 .grad
    optimizer.zero_grad()
    loss(opponent).backward()
    optimizer.step()
    torch.testing.assert_close(optimizer.masters[0], master_t - 0.1 * grad_at_t, rtol=0, atol=1e-6)


def test_phase_errors():
    model, optimizer, _ = make()
    state = ExtragradientState()
    with pytest.raises(RuntimeError, match="nothing was saved"):
        state.restore(model.parameters(), optimizer)
    state.save(model.parameters(), optimizer)
    with pytest.raises(RuntimeError, match="restore\\(\\) must come first"):
        state.save(model.parameters(), optimizer)
    with pytest.raises(ValueError, match="trainable parameters changed"):
        state.restore([nn.Parameter(torch.zeros(2, 2))], optimizer)
    with pytest.raises(ValueError, match="not an ExtragradientState"):
        ExtragradientState().load_state_dict({"phase": "middle"})


# ---------------------------------------------------------------------------------------------
# targets as data
# ---------------------------------------------------------------------------------------------


def test_every_algorithm_declares_its_target_terms():
    for alg in ALGORITHMS.values():
        assert alg.opponent_terms == OPPONENT_TERMS[alg.opponent]
    assert [(t.coefficient, t.source) for t in get_algorithm("omwu").opponent_terms] == [(2.0, "current"), (-1.0, "previous")]
    assert [t.source for t in get_algorithm("oipo2").opponent_terms] == ["pair"]


def test_regression_target_formulas():
    g = torch.Generator().manual_seed(1)
    p_y, p_yp, q_y, q_yp = torch.rand(4, 7, generator=g, dtype=F64)
    beta = 0.1
    one = lambda a: a[:, None]  # noqa: E731
    for name in ("oipo1", "egpo", "nash_md"):
        got = regression_target(name, one(p_y), one(p_yp), beta)
        torch.testing.assert_close(got, (p_y - p_yp) / beta, rtol=0, atol=1e-12)
    # Online IPO 2: z = y', P(y' ≻ y') = ½
    got = regression_target("oipo2", one(p_y), torch.full((7, 1), 0.5, dtype=F64), beta)
    torch.testing.assert_close(got, (p_y - 0.5) / beta, rtol=0, atol=1e-12)
    got = regression_target("omwu", torch.stack([p_y, q_y], -1), torch.stack([p_yp, q_yp], -1), beta)
    torch.testing.assert_close(got, (2 * (p_y - p_yp) - (q_y - q_yp)) / beta, rtol=0, atol=1e-12)
    log_ratio = torch.rand(7, generator=g, dtype=F64)
    got = policy_gradient_advantage("nash_md_pg", one(p_y), log_ratio, beta)
    torch.testing.assert_close(got, p_y - beta * log_ratio, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: regression_target("omwu", torch.zeros(3, 1), torch.zeros(3, 1), 0.1), "last axis of 2"),
        (lambda: regression_target("oipo1", torch.zeros(3, 1), torch.zeros(4, 1), 0.1), "one shape"),
        (lambda: regression_target("oipo1", torch.zeros(3, 1), torch.zeros(3, 1), 0.0), "beta"),
        (lambda: policy_gradient_advantage("nash_md_pg", torch.zeros(3, 1), torch.zeros(3, 1), 0.1), "one shape"),
        (lambda: ipo_regression_loss(*(torch.zeros(4),) * 4, torch.zeros(4, 1)), "one shape"),
        (lambda: ipo_regression_loss(torch.zeros(4), torch.zeros(4, 1), torch.zeros(4), torch.zeros(4), 0.0), "one shape"),
        (lambda: policy_gradient_loss(torch.zeros(4), torch.zeros(4, 1)), "one shape"),
    ],
)
def test_target_and_loss_shape_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_per_sequence_loss_is_float32_for_bf16_inputs():
    g = torch.Generator().manual_seed(2)
    logs = [torch.randn(8, generator=g) for _ in range(4)]
    target = torch.randn(8, generator=g)
    got = ipo_regression_loss(*(x.to(torch.bfloat16) for x in logs), target)
    assert got.dtype == torch.float32
    upcast = [x.to(torch.bfloat16).float() for x in logs]
    expected = (upcast[0] - upcast[1] - upcast[2] + upcast[3] - target) ** 2
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert policy_gradient_loss(logs[0].to(torch.bfloat16), target).dtype == torch.float32


def test_losses_and_schemes_import_light():
    """The LM driver imports the losses and schemes without numba, pandas or the simulator."""
    code = (
        "import sys, egpo_core.losses, egpo_core.schemes; "
        "heavy = [m for m in ('numba', 'pandas', 'matplotlib', 'egpo_core.simulator', 'egpo_core._kernel') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"imported: {out}"
    code = "import egpo_core.plotting, egpo_core; print(callable(egpo_core.simulate), callable(egpo_core.sweep))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "True True"
