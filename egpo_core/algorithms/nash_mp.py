"""Nash-MP: Nash mirror prox, the β-KL to π_ref inside both proximal steps.

Tiapkin, Calandriello, Belomestny, Moulines, Naumov, Rasul, Valko, Ménard, "Accelerating Nash Learning from
Human Feedback via Mirror Prox" (arXiv 2505.19731v1, 2025; its v2, "Proximal Point Nash Learning from Human
Feedback", replaces Nash-MP by another method, Nash Prox, and is not implemented here).

The paper's two steps (learning rate η_MP > 0), both proximal to π_k:

    π_{k+½} = argmin_π  (1/β) P(π_k ≻ π)     + KL(π ‖ π_ref) + (1/η_MP) KL(π ‖ π_k)
    π_{k+1} = argmin_π  (1/β) P(π_{k+½} ≻ π) + KL(π ‖ π_ref) + (1/η_MP) KL(π ‖ π_k)

With P(σ ≻ π) = 1 − Σ_y π(y) P(y ≻ σ) and egpo's step η = η_MP/β (η_MP = ηβ), each step's minimiser is

    log π_{k+1} ≐ (log π_k + ηβ log π_ref + η P(· ≻ σ)) / (1 + ηβ),   σ = π_k, then σ = π_{k+½},

MPO's magnetic step with the magnet fixed at π_ref, taken twice in the extragradient scheme. As a loss: the
Online IPO loss anchored at π_ref, weighted by 1/(1 + ηβ), in EGPO's two passes (a half step against π_t,
then from θ_t against π_{t+½}); one tabular SGD step of it is the step above, as for MPO.

Each step is EGPO's mirror-descent step at η′ = η/(1 + ηβ) (1 − η′β = 1/(1 + ηβ), η′β = ηβ/(1 + ηβ)), so
tabular Nash-MP at η is EGPO at η′ for every η > 0: the KL to π_ref taken inside the proximal step (rather
than linearised) keeps η′β < 1 however large η is. In every simulator mode the weight only scales the SGD
steps: Nash-MP at lr runs EGPO's two passes at lr/(1 + ηβ), ηβ = 4·lr/N.

The paper's claim (abstract): KL to π*_β decreases at a rate of order (1 + 2β)^{−N/2} in the number N of
preference queries, two per update (π_k and π_{k+½} are each queried once). The learning rate behind that
rate was not confirmed from the paper; η_MP = 2β (η = 2) is where the operator P(· ≻ π)/β, ½/β-Lipschitz from ℓ1 to ℓ∞,
meets the mirror-prox step condition η_MP·½/β ≤ 1, and (1 + η_MP)^{−k} is then the abstract's rate
(tests/test_algorithm_nash_mp.py measures it). The paper's language-model version (stochastic policy
gradients for the proximal steps, with an exponential moving average) is not implemented.
"""

import numpy as np
from scipy.special import log_softmax, softmax

from .base import Algorithm, center, preference_vector


def proximal_step(
    theta: np.ndarray, ref_logits: np.ndarray, preference: np.ndarray, eta: float, beta: float
) -> np.ndarray:
    """argmax_π η⟨π, preference⟩ − ηβ KL(π ‖ π_ref) − KL(π ‖ π_t): centered logits of
    (log π_t + ηβ log π_ref + η·preference)/(1 + ηβ), π_t = softmax(theta), batched over leading axes."""
    return center((log_softmax(theta, axis=-1) + eta * beta * log_softmax(ref_logits, axis=-1) + eta * preference)
                  / (1.0 + eta * beta))


def closed_form(theta: np.ndarray, ref_logits: np.ndarray, P: np.ndarray, eta: float, beta: float) -> np.ndarray:
    """One exact Nash-MP update: π_{t+½} = prox(π_t; P(·≻π_t)), then π_{t+1} = prox(π_t; P(·≻π_{t+½}))."""
    half = proximal_step(theta, ref_logits, preference_vector(P, softmax(theta, axis=-1)), eta, beta)
    return proximal_step(theta, ref_logits, preference_vector(P, softmax(half, axis=-1)), eta, beta)


ALGORITHM = Algorithm(
    name="nash_mp",
    label="Nash-MP",
    aliases=("nashmp", "nmp"),
    color="#111111",
    loss="ipo",
    opponent="current",
    anchor="reference",
    scheme="extragradient",
    closed_form=closed_form,
    loss_weight=lambda eta_beta: 1.0 / (1.0 + eta_beta),
    reference="Tiapkin et al. 2025 (arXiv 2505.19731v1)",
)
