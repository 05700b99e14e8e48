"""INPO: iterative Nash policy optimization — online mirror descent learned from ordered pairs.

Zhang et al., "Iterative Nash Policy Optimization: Aligning LLMs with General Preferences via
No-Regret Learning" (ICLR 2025, arXiv 2407.00617).

The update is the OMD step of Online IPO 1:

    log π_{t+1} ≐ (1 − ηβ) log π_t + ηβ log π_ref + η P(· ≻ π_t).

What is new is how it is learned, without estimating any win rate P(y ≻ π_t): draw y, y′ ~ π_t
i.i.d., let one Bernoulli(P(y ≻ y′)) judgement order them into a winner and a loser (y_w, y_l), and
minimise over θ

    L_t(θ) = E[(h_θ(y_w, y_l) − η/2)²],
    h_θ(y, y′) = Δ_θ − ηβ Δ_ref − (1 − ηβ) Δ_t,      Δ_q = log q(y) − log q(y′),

the IPO regression (Δ_θ − Δ_A − η/2)² with the anchor log π_A = ηβ log π_ref + (1 − ηβ) log π_t (the
geometric mixture :func:`~egpo_core.algorithms.base.geometric_mixture_logits` with c = ηβ: the
previous iterate is a second anchor) and the constant target η/2. Averaged over the order
(h is antisymmetric), L_t = E_{y,y′~π_t}(h_θ(y, y′) − η[P(y ≻ y′) − ½])² + const, and its minimiser
over all policies (INPO's Proposition 6) is h(y, y′) = η[P(y ≻ π_t) − P(y′ ≻ π_t)]: the OMD step.

One INPO update is the minimiser of L_t: the scheme "minimize" (:class:`~egpo_core.algorithms.base.Scheme`)
with the fields of Online IPO 1 otherwise. In the simulator's exact tabular mode that is the closed
form below, which is also the kernel's exact step of the Online IPO loss with uniform pairs — the same
iterates as Online IPO 1 bit for bit. In the sampled tabular mode it is the minimiser of the empirical
loss over the step's S ordered pairs, :func:`ordered_pair_step` (a least-squares solve on the pairs' graph,
:func:`ordered_pair_minimiser`, that MNPO shares; it tends to the closed form as S grows); the kernel
draws the pairs from the trajectory's stream in :func:`ordered_pairs`' order and runs the same solve.
Neural modes are refused: a network's update would be SGD on L_t, and one SGD step from θ_t is not the
minimiser (it is Online IPO 2's step, scaled by ηβ), nor is any fixed number of them.
"""

import numpy as np
from scipy.special import log_softmax, softmax

from ..validation import check_count
from .base import Algorithm, center, geometric_mixture_logits, mirror_descent_step, preference_vector


def closed_form(theta: np.ndarray, ref_logits: np.ndarray, P: np.ndarray, eta: float, beta: float) -> np.ndarray:
    """The minimiser of INPO's loss (Prop. 6): the OMD step MD(π_t; π_t)."""
    return mirror_descent_step(theta, ref_logits, preference_vector(P, softmax(theta, axis=-1)), eta, beta)


def ordered_pairs(
    pi: np.ndarray, P: np.ndarray, num_samples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``num_samples`` ordered pairs (winners, losers) of one policy ``pi`` (N,): y, y′ ~ π i.i.d., then
    y wins with probability P(y ≻ y′) (one uniform draw per pair). Draw order: all y, all y′, the
    judgements."""
    n = pi.shape[-1]
    y = rng.choice(n, size=num_samples, p=pi)
    yp = rng.choice(n, size=num_samples, p=pi)
    y_wins = rng.random(num_samples) < P[y, yp]
    return np.where(y_wins, y, yp), np.where(y_wins, yp, y)


def ordered_pair_minimiser(
    theta: np.ndarray,
    anchor_logits: np.ndarray,
    P: np.ndarray,
    eta: float,
    num_samples: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Centered logits of the minimiser over policies of the empirical ordered-pair loss

        Σ_s (f(y_w,s) − f(y_l,s) − η/2)²,   f = log π − log π_A,

    over S = ``num_samples`` ordered pairs of π_t = softmax(``theta``) (:func:`ordered_pairs`), for the
    anchor log π_A = ``anchor_logits`` (any normalization). The normal equations L f = b,
    L = Σ_s (e_w − e_l)(e_w − e_l)ᵀ, b = (η/2) Σ_s (e_w − e_l), are solved with the smallest norm
    (the simulator kernel's solve, ``egpo_core._kernel._ordered_pair_solve``): f is unique up to a constant
    on each connected set of drawn responses (each is centred), and a response in no drawn pair keeps
    f = 0, i.e. its anchor log-probability. As S → ∞,
    L/S → 2(diag π_t − π_t π_tᵀ) and b/S → 2η π_t ⊙ (Pπ_t − ½), so f → η P(· ≻ π_t) + const (full-support
    π_t). ``theta`` (…, N), one draw stream for all rows in order.
    """
    from .._kernel import _ordered_pair_solve  # the kernel imports this package: imported when called

    num_samples = check_count(num_samples, "num_samples")
    theta = np.asarray(theta, dtype=np.float64)
    anchor_logits = np.broadcast_to(np.asarray(anchor_logits, dtype=np.float64), theta.shape)
    P = np.broadcast_to(np.asarray(P, dtype=np.float64), theta.shape + theta.shape[-1:])
    n = theta.shape[-1]
    out = np.empty_like(theta)
    for index in np.ndindex(theta.shape[:-1]):
        winners, losers = ordered_pairs(softmax(theta[index]), P[index], num_samples, rng)
        f = _ordered_pair_solve(winners.astype(np.int64), losers.astype(np.int64), 0.5 * eta, n)
        out[index] = log_softmax(anchor_logits[index] + f)
    return center(out)


def ordered_pair_step(
    theta: np.ndarray,
    ref_logits: np.ndarray,
    P: np.ndarray,
    eta: float,
    beta: float,
    num_samples: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """One sampled tabular INPO update: :func:`ordered_pair_minimiser` with INPO's anchor
    log π_A = (1 − ηβ) log π_t + ηβ log π_ref; it tends to :func:`closed_form` as S grows."""
    anchor = geometric_mixture_logits(theta, np.broadcast_to(ref_logits, np.shape(theta)), eta * beta)
    return ordered_pair_minimiser(theta, anchor, P, eta, num_samples, rng)


ALGORITHM = Algorithm(
    name="inpo",
    label="INPO",
    aliases=("iterative_nash",),
    color="#bcbd22",
    loss="ipo",
    opponent="current",
    anchor="reference",
    scheme="minimize",
    closed_form=closed_form,
    reference="Zhang et al. 2025 (arXiv 2407.00617)",
    simulated=("tabular/exact", "tabular/sampled"),
)
