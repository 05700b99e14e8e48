"""The simulator kernel's interface cannot be miswired.

``_kernel.run_chunk`` takes named tuples (``_kernel.KernelInputs``). These tests read the source of the
kernel and of the code that builds its inputs (``_kernel_inputs``) and check that

* run_chunk's parameters are the steps and the fields of KernelInputs, each annotated with its type;
* every field of every tuple is read by name, in run_chunk (sizes, before its parallel loops), in
  ``_run_group`` (a group's sizes and flags) or once in ``_advance_group`` (before its loop), and the parallel
  loops pass the tuples only whole to ``_run_group`` (numba drops stores into a named tuple's arrays written in
  the prange body itself, numba/numba#5872; a call it keeps);
* every tuple is built once, with every field named (no positional values);
* every field has a docstring, and each array holds the dtype and shape its docstring states.

None of this runs the kernel, so nothing is compiled.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
import typing

import numpy as np
import pytest

from egpo_core import _kernel, _kernel_inputs
from egpo_core.config import METRICS, SimulationConfig
from egpo_core.games import random_games
from egpo_core.network import neural_init, network_parameters
from egpo_core.simulator import _config_table

TUPLES = {name: getattr(_kernel, name) for name in
          ("Games", "Trajectories", "Groups", "Policy", "Gradient", "Recording", "State", "Outputs")}


def _function_tree(dispatcher) -> ast.FunctionDef:
    source = textwrap.dedent(inspect.getsource(dispatcher.py_func))
    return ast.parse(source).body[0]


def _field_reads(tree: ast.FunctionDef, parameter_type: dict) -> tuple[dict, set]:
    """(tuple, field) → how often ``tree`` reads tuple.field, and the ids of the Name nodes read so."""
    reads, attribute_values = {}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in parameter_type:
            key = (node.value.id, node.attr)
            assert node.attr in parameter_type[node.value.id]._fields, \
                f"{tree.name} reads {node.value.id}.{node.attr}, not a field of {parameter_type[node.value.id].__name__}"
            reads[key] = reads.get(key, 0) + 1
            attribute_values.add(id(node.value))
    return reads, attribute_values


def _first_loop(tree: ast.FunctionDef) -> int:
    return next(i for i, stmt in enumerate(tree.body) if isinstance(stmt, ast.For))


def _field_docs() -> dict[tuple[str, str], str]:
    """(class, field) → the docstring under the field in _kernel.py (None when it has none)."""
    docs = {}
    for node in ast.parse(inspect.getsource(_kernel)).body:
        if isinstance(node, ast.ClassDef) and node.name in TUPLES:
            body = node.body
            for i, item in enumerate(body):
                if isinstance(item, ast.AnnAssign):
                    after = body[i + 1] if i + 1 < len(body) else None
                    is_doc = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    docs[node.name, item.target.id] = after.value.value if is_doc else None
    return docs


def test_run_chunk_takes_the_steps_then_the_kernel_inputs_by_type():
    parameters = list(inspect.signature(_kernel.run_chunk.py_func).parameters)
    assert parameters == ["t_start", "t_end", *_kernel.KernelInputs._fields, "threads"]
    kernel_hints = typing.get_type_hints(_kernel.run_chunk.py_func)
    input_types = typing.get_type_hints(_kernel.KernelInputs)
    assert {field: kernel_hints[field] for field in input_types} == input_types
    assert kernel_hints["threads"] is int
    assert sorted(t.__name__ for t in input_types.values()) == sorted(TUPLES), "each tuple type is one parameter"


def _calls(statements, name: str) -> list[ast.Call]:
    return [node for stmt in statements for node in ast.walk(stmt)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name]


def test_every_field_is_read_by_name_before_the_loops():
    """run_chunk reads sizes before its parallel loops and passes the tuples only whole, in their order, to
    _run_group; _run_group reads a group's sizes and flags and passes them whole to _advance_group, which
    reads each field once before its loop over the steps."""
    parameter_type = typing.get_type_hints(_kernel.KernelInputs)
    outer, middle, inner = (_function_tree(f) for f in (_kernel.run_chunk, _kernel._run_group, _kernel._advance_group))
    reads = {tree.name: _field_reads(tree, parameter_type) for tree in (outer, middle, inner)}
    fields = {(name, field) for name, cls in parameter_type.items() for field in cls._fields}
    assert fields - {key for counted, _ in reads.values() for key in counted} == set(), "fields never read"
    for name, (counted, _) in reads.items():
        assert [key for key, count in counted.items() if count != 1] == [], f"fields read more than once in {name}"
    order = list(_kernel.KernelInputs._fields)
    # run_chunk: tuple.field only before the first statement that holds a loop; in the loops the tuples only as
    # whole arguments of the _run_group calls (in the order of KernelInputs, no positional unpacking)
    loop = next(i for i, stmt in enumerate(outer.body) if any(isinstance(n, ast.For) for n in ast.walk(stmt)))
    for stmt in outer.body[:loop]:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name) and node.id in parameter_type:
                assert id(node) in reads["run_chunk"][1], f"{node.id} used other than by field name (line {node.lineno})"
    calls = _calls(outer.body[loop:], "_run_group")
    assert len(calls) == 2  # a whole group, a slice of one
    for call in calls:
        assert [arg.id for arg in call.args if isinstance(arg, ast.Name) and arg.id in parameter_type] == order
    in_loop = [n for stmt in outer.body[loop:] for n in ast.walk(stmt) if isinstance(n, ast.Name) and n.id in parameter_type]
    assert len(in_loop) == len(order) * len(calls), "a tuple read inside run_chunk's parallel loops"
    # _run_group: tuple.field, or the tuples whole as the arguments of its one _advance_group call
    assert [a.arg for a in middle.args.args if a.arg in parameter_type] == order
    call = _calls(middle.body, "_advance_group")
    assert len(call) == 1
    passed = [arg.id for arg in call[0].args if isinstance(arg, ast.Name) and arg.id in parameter_type]
    assert passed == [name for name in order if name != "groups"]
    whole = {id(arg) for arg in call[0].args}
    for node in ast.walk(middle):
        if isinstance(node, ast.Name) and node.id in parameter_type and not isinstance(node.ctx, ast.Param):
            assert id(node) in reads["_run_group"][1] or id(node) in whole, \
                f"{node.id} used other than by field name (line {node.lineno})"
    # _advance_group: tuple.field only, before its loop over the steps
    assert [a.arg for a in inner.args.args if a.arg in parameter_type] == passed
    loop = _first_loop(inner)
    for node in ast.walk(inner):
        if isinstance(node, ast.Name) and node.id in parameter_type:
            assert id(node) in reads["_advance_group"][1], f"{node.id} used other than by field name (line {node.lineno})"
    for stmt in inner.body[loop:]:
        names = {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name)}
        assert not names & set(parameter_type), f"_advance_group line {stmt.lineno} reads a tuple inside its loop"


def test_each_tuple_is_built_once_with_every_field_named():
    tree = ast.parse(inspect.getsource(_kernel_inputs))
    built = {name: 0 for name in [*TUPLES, "KernelInputs"]}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "_kernel"
                and node.func.attr in built):
            cls = getattr(_kernel, node.func.attr)
            assert node.args == [], f"{node.func.attr} built with positional values (line {node.lineno})"
            assert sorted(k.arg for k in node.keywords) == sorted(cls._fields), node.func.attr
            built[node.func.attr] += 1
    assert built == {name: 1 for name in built}


def test_a_tuple_without_one_of_its_fields_is_refused():
    values = {field: np.zeros(1) for field in _kernel.Trajectories._fields}
    del values["lr"]
    with pytest.raises(TypeError, match="lr"):
        _kernel.Trajectories(**values)


def test_every_field_has_a_docstring():
    docs = _field_docs()
    expected = {(name, field) for name, cls in TUPLES.items() for field in cls._fields}
    assert set(docs) == expected
    assert [key for key, doc in docs.items() if not doc] == []


@pytest.mark.parametrize("policy, conventions", [("tabular", "default"), ("neural", "reference")])
def test_built_inputs_hold_what_their_docstrings_state(policy, conventions):
    runs, n = 3, 4
    P = random_games(runs, n, 0)
    logp_ref = np.log(np.full((runs, n), 1.0 / n))
    config = SimulationConfig(algorithms=("egpo", "nash_md", "mpo"), beta=0.1, lr=0.05, iterations=5, policy=policy,
                              gradient="sampled", conventions=conventions, metrics=METRICS, magnet_period=2)
    points = [config.replace(beta=b) for b in (0.1, 0.2)]
    algorithms = config.algorithm_objects()
    configs = _config_table(points, n, algorithms)
    params0, width, n_hidden = (network_parameters(neural_init(runs, n, 3, 2, seed=0), runs, n) if policy == "neural"
                                else (np.zeros((runs, n)), 1, 0))
    shared = conventions == "reference" and policy == "neural"
    inputs = _kernel_inputs.build_kernel_inputs(P, logp_ref, params0, configs, algorithms, config, width=width,
                                                n_hidden=n_hidden, shared=shared, n_recorded=6)
    K = len(points) * len(algorithms) * runs
    shapes = {"K": K, "N": n, "G": runs, "R": 6, "parameters": params0.shape[1], "groups + 1": None}
    docs = _field_docs()
    for tuple_name, field in docs:
        value = getattr(getattr(inputs, tuple_name.lower()), field)
        if not isinstance(value, np.ndarray):
            assert isinstance(value, (bool, int)) and not isinstance(value, np.generic), (tuple_name, field)
            continue
        doc = docs[tuple_name, field]
        if tuple_name == "Outputs":  # documented once for all: float64 (K, R)
            doc = "float64 (K, R)"
        dtype = re.match(r"(float64|int64|uint64|bool)\b", doc)
        assert dtype, f"{tuple_name}.{field}: no dtype in its docstring"
        assert value.dtype == np.dtype(dtype.group(1)), (tuple_name, field, value.dtype)
        shape = re.match(r"\w+ \(([^)]*)\)", doc)
        dims = [d.strip() for d in shape.group(1).split(",") if d.strip()] if shape else ["K"]
        if value.shape != (1, 1):  # a placeholder for an unrecorded metric
            assert len(value.shape) == len(dims), (tuple_name, field, value.shape)
            for size, dim in zip(value.shape, dims):
                if shapes.get(dim) is not None:
                    assert size == shapes[dim], (tuple_name, field, value.shape, dims)
    # the layout: config-major, then algorithm, then run
    trajectories = inputs.trajectories
    np.testing.assert_array_equal(trajectories.beta, np.repeat([0.1, 0.2], len(algorithms) * runs))
    np.testing.assert_array_equal(trajectories.game, np.tile(np.arange(runs), len(points) * len(algorithms)))
    np.testing.assert_array_equal(trajectories.loss.reshape(len(points), -1, runs)[:, :, 0],
                                  [[_kernel.LOSS_CODES[a.loss] for a in algorithms]] * len(points))
    mpo_weight = trajectories.weight.reshape(len(points), -1, runs)[:, 2, 0]
    eta_beta = 4 * 0.05 / n  # ηβ = 4·lr/N
    np.testing.assert_allclose(mpo_weight, 1 / (1 + eta_beta), rtol=1e-13)
    # every trajectory in exactly one group; coupled runs share one
    groups = inputs.groups
    assert sorted(groups.members) == list(range(K)) and groups.group_ptr[-1] == K
    sizes = np.diff(groups.group_ptr)
    assert set(sizes) == ({runs} if shared else {1})
