"""SimulationConfig: validated once when built (one ValueError naming the field), values stored as
given, one string as one name, documented fields, and its JSON form."""

import dataclasses
import json

import pytest

from egpo_core.algorithms import ALGORITHMS, PAPER_ALGORITHMS
from egpo_core.config import METRICS, SimulationConfig, field_docs

BASE = dict(algorithms=["egpo"], beta=0.1, lr=0.05, iterations=3)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(beta="0.1"), r"beta must be .*got beta='0.1'"),
        (dict(beta=None), r"beta must be .*got beta=None"),
        (dict(beta=0.0), r"beta must be positive"),
        (dict(beta=float("inf")), r"beta must be positive and finite"),
        (dict(lr=-0.1), r"lr must be positive"),
        (dict(lr=None), r"exactly one of lr .* and eta"),
        (dict(eta=0.3), r"exactly one of lr .* and eta"),
        (dict(seed=-1), r"seed must be at least 0, got seed=-1"),
        (dict(seed=1.5), r"seed must be an integer, got seed=1.5"),
        (dict(iterations=0), r"iterations must be at least 1"),
        (dict(iterations=True), r"iterations must be an integer"),
        (dict(num_samples=0), r"num_samples must be at least 1"),
        (dict(record_every="10"), r"record_every must be an integer"),
        (dict(magnet_period=-1), r"magnet_period must be at least 0"),
        (dict(mixture=1.5), r"mixture must be a number in \[0, 1\]"),
        (dict(policy="table"), r"policy must be one of"),
        (dict(gradient=None), r"gradient must be one of"),
        (dict(pair_sampling="pairs"), r"pair_sampling must be one of"),
        (dict(conventions="paper"), r"conventions must be one of"),
        (dict(algorithms=[]), r"algorithms is empty"),
        (dict(algorithms="nope"), r"unknown algorithm 'nope'"),
        (dict(algorithms=["egpo", "egpo"]), r"algorithms lists 'egpo' more than once"),
        (dict(algorithms=[3]), r"algorithms must hold names"),
        (dict(algorithms=7), r"algorithms must be a name or a list of names"),
        (dict(metrics="gap"), r"unknown metric\(s\) 'gap'"),
    ],
)
def test_bad_values_raise_one_value_error_naming_the_field(change, message):
    with pytest.raises(ValueError, match=message):
        SimulationConfig(**{**BASE, **change})


def test_a_string_is_one_name():
    config = SimulationConfig(**{**BASE, "algorithms": "egpo", "metrics": "exploitability"})
    assert config.algorithms == ("egpo",)
    assert config.metrics == ("duality_gap", "exploitability")  # the gap is always recorded, first


def test_values_are_stored_as_given_and_normalized_once():
    import numpy as np

    config = SimulationConfig(beta=np.float64(0.01), eta=0.1, iterations=np.int64(50), seed=np.int64(7))
    assert config.eta == 0.1 and config.lr is None  # nothing derived or rounded here
    assert type(config.beta) is float and type(config.iterations) is int and type(config.seed) is int
    assert config.algorithms == PAPER_ALGORITHMS


def test_frozen_and_replace_validates_and_switches_step_kind():
    config = SimulationConfig(**BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.beta = 0.5
    switched = config.replace(eta=0.2)
    assert (switched.lr, switched.eta) == (None, 0.2)
    with pytest.raises(ValueError, match="beta must be positive"):
        config.replace(beta=-1.0)
    with pytest.raises(ValueError, match="unknown option.*betta"):
        config.replace(betta=0.1)


def test_json_round_trip():
    config = SimulationConfig(algorithms=["egpo", ALGORITHMS["oipo1"]], beta=0.1, lr=0.05, iterations=3,
                              metrics=["exploitability"])
    data = json.loads(json.dumps(config.to_dict()))
    assert data["algorithms"] == ["egpo", "oipo1"]
    back = SimulationConfig.from_dict({**data, "runs": 10})  # non-field keys of a saved result are ignored
    assert back == dataclasses.replace(config, algorithms=("egpo", "oipo1"))


def test_every_field_is_documented():
    docs = field_docs()
    assert set(docs) == {f.name for f in dataclasses.fields(SimulationConfig)}
    assert all(len(text) > 10 for text in docs.values())
    assert set(METRICS) >= set(SimulationConfig(**BASE).metrics)


def test_presets_are_named_configs_with_the_paper_settings():
    from egpo_core.presets import PAPER_SEED, PRESETS

    paper = {  # (policy, gradient, β, iterations, SGD lr, N): the EGPO paper's six settings
        "exact-tabular-beta0.1": ("tabular", "exact", 0.1, 1_000, 0.1, 10),
        "exact-tabular-beta0.01": ("tabular", "exact", 0.01, 5_000, 0.02, 10),
        "exact-tabular-beta0.001": ("tabular", "exact", 0.001, 100_000, 2e-4, 10),
        "exact-neural-beta0.01": ("neural", "exact", 0.01, 10_000, 0.003, 100),
        "sampled-tabular-beta0.01": ("tabular", "sampled", 0.01, 100_000, 2e-4, 10),
        "sampled-neural-beta0.1": ("neural", "sampled", 0.1, 20_000, 1e-3, 100),
    }
    assert set(PRESETS) == set(paper)
    for name, (policy, gradient, beta, iterations, lr, n) in paper.items():
        preset = PRESETS[name]
        assert isinstance(preset.config, SimulationConfig)
        c = preset.config
        assert (c.policy, c.gradient, c.beta, c.iterations, c.lr, preset.num_actions) == (policy, gradient, beta, iterations, lr, n)
        assert c.seed == PAPER_SEED and c.eta is None and c.algorithms == PAPER_ALGORITHMS
        assert preset.configure(fast=True).iterations == preset.fast_iterations
        assert preset.configure(gradient="sampled", iterations=None).gradient == "sampled"  # None: keep the preset's
    with pytest.raises(ValueError, match="policy='tabular'"):
        PRESETS["exact-tabular-beta0.1"].configure(policy="neural")
    with pytest.raises(ValueError, match="fast or iterations"):
        PRESETS["exact-tabular-beta0.1"].configure(fast=True, iterations=5)
