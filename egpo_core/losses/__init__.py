"""Every NLHF algorithm as a loss on a parametrized policy: the one regression and the PG loss.

Notation (the EGPO paper's, as losses): log-probabilities ``logp`` of shape (runs, N) from a policy module
(with gradient), π_t = exp(logp) detached, an anchor policy π_A, preferences P (runs, N, N) with
P[r, y, y'] = P(y ≻ y'), and

    Δ_A(y, y') = [log π_θ(y) − log π_θ(y')] − [log π_A(y) − log π_A(y')].

**Regression (loss "ipo", "ipo2").**  L = E_{(y,y')~μ} (Δ_A(y, y') − target(y, y'))², with
    target = [T_y − T_{y'}]/β,  T = P(· ≻ σ) for an opponent σ (detached), or
    target = (P(y ≻ y') − ½)/β  for the "pairwise" opponent (σ = y' itself).
μ is uniform over all N² pairs for "ipo" (one SGD step of rate lr is then the mirror-descent step
MD(π_t; σ) with ηβ = 4·lr/N) and π_t ⊗ π_t for "ipo2".

**Policy gradient (loss "pg").**  L = −Σ_y π_t(y) [T_y − β (log π_t − log π_A)(y)] log π_θ(y), the
coefficients detached, so ∇_θ L = −E_{y~π_t}[A(y) ∇ log π_θ(y)].

The algorithm's declared fields pick the pieces (never its name):

* ``opponent``: "current" σ = π_t (or ``opponent_probs``, e.g. π_{t+½} in EGPO's full step);
  "mixture" σ = π_t^c ∝ π_t^{1−c} π_ref^c with c = ``mixture`` (default ηβ); "optimistic"
  T = 2 P π_t − P π_{t−1}; "pairwise" target (P(y ≻ y') − ½)/β.
* ``anchor``: "reference" π_ref; "current" π_t (detached log π_θ); "magnet" π_mag (``magnet_logp``,
  default π_ref).
* ``loss_weight(ηβ)`` multiplies the loss (MPO's 1/(1 + ηβ)).

Reduction everywhere: the sum over runs of each run's mean over pairs/samples, so the gradient of run
r's parameters is run r's own mean gradient (runs are independent games).

Three modules, every name importable from ``egpo_core.losses``: :mod:`~egpo_core.losses.blocks`, the
per-pair building blocks (:func:`ipo_regression_loss`, :func:`policy_gradient_loss`, the regression
target and the advantage, the anchor mixture Σ_k w_k log π_k and the anchored log-ratio), which take per-response or per-sequence log-probabilities and do not
reduce: the language-model trainer and the losses below use them; :mod:`~egpo_core.losses.options`,
the options of a whole-policy loss (:class:`LossOptions`) and what an algorithm's declared fields
make of them (anchor, opponents, weight); :mod:`~egpo_core.losses.expectations`, the loss of a whole
tabular or neural policy, as an exact expectation (:func:`exact_loss`) or a sampled estimate
(:func:`sampled_loss`).
"""

from .blocks import (
    anchor_mixture_logp,
    anchored_log_ratio,
    ipo_regression_loss,
    policy_gradient_advantage,
    policy_gradient_loss,
    regression_target,
)
from .expectations import exact_loss, sampled_loss
from .options import LossOptions, PairDistribution

__all__ = [
    "ipo_regression_loss",
    "policy_gradient_loss",
    "regression_target",
    "policy_gradient_advantage",
    "anchor_mixture_logp",
    "anchored_log_ratio",
    "exact_loss",
    "sampled_loss",
    "LossOptions",
    "PairDistribution",
]
