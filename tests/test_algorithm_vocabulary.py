"""The vocabulary of algorithm choices is defined once (enums in algorithms/base.py) and checked
when an algorithm is declared; the simulator kernel's codes are derived from it. Beside it, the
``conventions`` names decode into their three independent switches."""

import dataclasses
import sys
import textwrap

import numpy as np
import pytest

from egpo_core import _kernel, algorithms, simulate
from egpo_core.algorithms import (
    ALGORITHMS,
    Anchor,
    ConventionSwitches,
    LossFamily,
    MixtureNormalization,
    MixtureRule,
    Opponent,
    Scheme,
    get_algorithm,
)
from egpo_core.stepsizes import eta_from_lr, mixture_coefficient


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


# ---------------------------------------------------------------------------------------------
# conventions: a name decoded once into three independent switches
# ---------------------------------------------------------------------------------------------


def test_named_conventions_decode_into_their_switches():
    assert ConventionSwitches.decode("default") == ConventionSwitches(
        MixtureRule.ETA_BETA, MixtureNormalization.ACTIONS, shared_network=False
    )
    assert ConventionSwitches.decode("reference") == ConventionSwitches(
        MixtureRule.HALF_ETA_BETA, MixtureNormalization.RUNS, shared_network=True
    )
    switches = ConventionSwitches(mixture_rule="half_eta_beta")
    assert ConventionSwitches.decode(switches) is switches
    assert switches.mixture_rule is MixtureRule.HALF_ETA_BETA


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: ConventionSwitches.decode("paper"), r"conventions must be one of \('default', 'reference'\), got conventions='paper'"),
        (lambda: ConventionSwitches.decode(None), "got conventions=None"),
        (lambda: ConventionSwitches(mixture_rule="third"), "unknown mixture_rule 'third'; known: eta_beta, half_eta_beta"),
        (lambda: ConventionSwitches(mixture_normalization="games"), "unknown mixture_normalization 'games'"),
        (lambda: ConventionSwitches(shared_network="yes"), "shared_network must be a bool"),
    ],
)
def test_bad_conventions_name_the_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_mixture_rule_alone_sets_the_mixture_coefficient():
    lr, beta, n = 0.02, 0.01, 10
    assert mixture_coefficient(lr, beta, n, "default") == eta_from_lr(lr, beta, n) * beta  # ηβ = 4·lr/N = 0.008
    assert mixture_coefficient(lr, beta, n, "reference") == 2 * lr / n  # 0.004
    only_rule = ConventionSwitches(mixture_rule=MixtureRule.HALF_ETA_BETA)
    assert mixture_coefficient(lr, beta, n, only_rule) == 2 * lr / n
    assert mixture_coefficient(lr, beta, n, ConventionSwitches(shared_network=True)) == mixture_coefficient(lr, beta, n)


@pytest.mark.parametrize("name", list(ALGORITHMS))
@pytest.mark.parametrize("sampled", [False, True])
def test_runs_normalization_applies_to_the_sampled_nash_md_only(name, sampled):
    alg = get_algorithm(name)
    runs = ConventionSwitches(mixture_normalization="runs")
    sampled_nash_md = sampled and alg.loss == "ipo" and alg.opponent == "mixture"
    assert runs.normalization_for(alg, sampled) is (MixtureNormalization.RUNS if sampled_nash_md else MixtureNormalization.ACTIONS)
    assert ConventionSwitches().normalization_for(alg, sampled) is MixtureNormalization.ACTIONS
    assert sampled_nash_md == (name == "nash_md" and sampled)


# ---------------------------------------------------------------------------------------------
# the registry: one module per algorithm, found without a list to edit
# ---------------------------------------------------------------------------------------------


def _extra_module(tmp_path, monkeypatch, name: str, body: str):
    """Put ``body`` as module ``name`` into the algorithms package (a directory added to its path)."""
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    monkeypatch.setattr(algorithms, "__path__", [*algorithms.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, f"egpo_core.algorithms.{name}", raising=False)


def test_registry_lists_the_eight_modules_in_the_figure_order_then_the_others_by_module_name():
    assert list(ALGORITHMS) == ["oipo1", "oipo2", "nash_md", "nash_md_pg", "egpo", "mpo", "sppo", "omwu",
                                "comal", "inpo", "mnpo", "nash_mp", "onpo"]


def test_a_recombining_module_is_registered_and_simulated_without_other_edits(tmp_path, monkeypatch):
    _extra_module(tmp_path, monkeypatch, "recombined", '''
        from egpo_core.algorithms.base import Algorithm
        from egpo_core.algorithms.nash_md import closed_form

        ALGORITHM = Algorithm(name="recombined", label="Recombined", loss="ipo2", opponent="mixture",
                              anchor="current", scheme="extragradient", closed_form=closed_form)
    ''')
    registry = algorithms._registry()
    assert list(registry) == [*ALGORITHMS, "recombined"]
    recombined = registry["recombined"]
    P = np.array([[[0.5, 0.9, 0.2], [0.1, 0.5, 0.7], [0.8, 0.3, 0.5]]])
    res = simulate(P, np.zeros((1, 3)), [recombined], beta=0.1, lr=0.05, iterations=3, mixture=0.1, progress=False)
    gaps = res.duality_gap["recombined"]
    assert np.all(np.isfinite(gaps)) and gaps[0, -1] != gaps[0, 0]


def test_a_module_without_an_algorithm_is_named(tmp_path, monkeypatch):
    _extra_module(tmp_path, monkeypatch, "helper_without_algorithm", "HELPER = 1\n")
    with pytest.raises(ImportError, match=r"egpo_core\.algorithms\.helper_without_algorithm must declare ALGORITHM"):
        algorithms._registry()


def test_a_second_module_with_a_taken_name_is_refused(tmp_path, monkeypatch):
    _extra_module(tmp_path, monkeypatch, "zz_second_egpo", '''
        import dataclasses
        from egpo_core.algorithms.egpo import ALGORITHM as EGPO

        ALGORITHM = dataclasses.replace(EGPO)
    ''')
    with pytest.raises(ImportError, match="declares the algorithm name 'egpo' a second time"):
        algorithms._registry()


# ---------------------------------------------------------------------------------------------
# names, aliases, display names and colours: declared once, in each algorithm's module
# ---------------------------------------------------------------------------------------------

# the colours every figure drew before the algorithms declared them: matplotlib's tab10, listing order
TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def test_each_module_declares_its_colour_the_tab10_of_the_listing_order():
    assert tuple(algorithms.algorithm_color(name) for name in list(ALGORITHMS)[:8]) == TAB10
    # every registered algorithm has its own colour, the later ones too
    colours = [algorithms.algorithm_color(name) for name in ALGORITHMS]
    assert len(set(colours)) == len(ALGORITHMS) and algorithms.UNDECLARED_COLOR not in colours


@pytest.mark.parametrize("alias,name", [
    ("eg", "egpo"), ("EGPO", "egpo"), ("nmd", "nash_md"), ("NashMD", "nash_md"), ("nmdpg", "nash_md_pg"),
    ("nashmdpg", "nash_md_pg"), ("online_ipo1", "oipo1"), ("Online_IPO2", "oipo2"), (" sppo ", "sppo"),
    ("OMWU", "omwu"), ("Nash_MP", "nash_mp"), ("NashMP", "nash_mp"), ("nmp", "nash_mp"),
])
def test_get_algorithm_accepts_names_and_aliases_case_insensitively(alias, name):
    assert get_algorithm(alias).name == name
    assert algorithms.display_name(alias) == get_algorithm(name).label
    assert algorithms.algorithm_color(alias) == get_algorithm(name).color


def test_an_unknown_name_lists_names_with_their_aliases():
    with pytest.raises(ValueError, match=r"unknown algorithm 'nashmd2'; known: .*nash_md \(nashmd, nmd\).*egpo \(eg\)"):
        get_algorithm("nashmd2")
    with pytest.raises(ValueError, match="unknown algorithm 'x'"):
        algorithms.algorithm_color("x")
    assert algorithms.algorithm_color("x", default=None) is None
    assert algorithms.display_name("conventions", default="conventions") == "conventions"


def test_display_names_are_the_labels():
    assert [algorithms.display_name(n) for n in ("oipo1", "nash_md_pg", "egpo", "nmp")] == [
        "Online IPO 1 (OMD)", "Nash-MD-PG", "EGPO", "Nash-MP"]


@pytest.mark.parametrize("changes,message", [
    (dict(color="red"), "color must be a hex colour '#rrggbb', got 'red'"),
    (dict(color="#12345"), "color must be a hex colour"),
    (dict(aliases="eg"), "aliases must be a tuple of non-empty names"),
    (dict(aliases=("",)), "aliases must be a tuple of non-empty names"),
])
def test_a_bad_colour_or_alias_is_refused_when_declared(changes, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(get_algorithm("egpo"), name="bad", **changes)


def test_an_algorithm_without_a_colour_is_drawn_in_the_undeclared_colour():
    bare = dataclasses.replace(get_algorithm("egpo"), name="bare", color=None, aliases=("B",))
    assert bare.aliases == ("b",)
    assert algorithms.algorithm_color(bare) == algorithms.UNDECLARED_COLOR


def test_an_alias_taken_by_another_algorithm_is_refused(tmp_path, monkeypatch):
    _extra_module(tmp_path, monkeypatch, "zz_alias_clash", '''
        import dataclasses
        from egpo_core.algorithms.egpo import ALGORITHM as EGPO

        ALGORITHM = dataclasses.replace(EGPO, name="egpo_again", aliases=("NMD",))
    ''')
    with pytest.raises(ImportError, match="the name or alias 'nmd' of 'egpo_again' is already taken by 'nash_md'"):
        algorithms._registry()
