"""The vocabulary of algorithm choices is defined once (enums in algorithms/base.py) and checked
when an algorithm is declared; the simulator kernel's codes are derived from it."""

import dataclasses

import pytest

from egpo_core import _kernel
from egpo_core.algorithms import ALGORITHMS, Anchor, LossFamily, Opponent, Scheme, get_algorithm


@pytest.mark.parametrize("field,value", [("loss", "dpo"), ("opponent", "future"), ("anchor", "sft"), ("scheme", "triple")])
def test_declaring_an_unknown_choice_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"unknown {field} '{value}'"):
        dataclasses.replace(get_algorithm("egpo"), name="bad", **{field: value})


def test_fields_are_members_and_compare_as_strings():
    egpo = get_algorithm("egpo")
    assert egpo.scheme is Scheme.EXTRAGRADIENT and egpo.scheme == "extragradient"
    assert f"{egpo.loss}" == "ipo"
    declared = dataclasses.replace(egpo, name="eg2", opponent="mixture")
    assert declared.opponent is Opponent.MIXTURE


@pytest.mark.parametrize(
    "vocabulary,codes",
    [(LossFamily, _kernel.LOSS_CODES), (Opponent, _kernel.OPPONENT_CODES), (Anchor, _kernel.ANCHOR_CODES), (Scheme, _kernel.SCHEME_CODES)],
)
def test_kernel_codes_cover_each_vocabulary_once(vocabulary, codes):
    assert sorted(codes.values()) == list(range(len(vocabulary)))
    assert set(codes) == set(vocabulary)
    for alg in ALGORITHMS.values():
        assert alg.loss in _kernel.LOSS_CODES and alg.opponent in _kernel.OPPONENT_CODES
