"""The object model: threads, pickles, copies, solutions that own their derivatives,
arrays owned by the caller, and a pipeline whose imports flow one way."""

from __future__ import annotations

import ast
import copy
import pickle
import threading
from collections.abc import Callable
from pathlib import Path

import cvxpy as cp
import numpy as np
import pytest

import diffmodel as dm

PACKAGE = Path(dm.__file__).resolve().parent
#: A solve's x and its gradients by parameter name.
Result = tuple[np.ndarray, dict[str, np.ndarray]]


def _model() -> dm.Model:
    """A model whose K depends on a parameter (A), so solves refactor."""
    x = cp.Variable(6, name="x")
    A = cp.Parameter((2, 6), name="A")
    b = cp.Parameter(2, name="b")
    q = cp.Parameter(6, name="q")
    return dm.Model(cp.Minimize(0.5 * cp.sum_squares(x) + q @ x), {"bal": A @ x == b})


def _values(i: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(i)
    return {"A": rng.standard_normal((2, 6)) + np.eye(2, 6) * 3, "b": rng.standard_normal(2),
            "q": rng.standard_normal(6)}


def _run(model: dm.Model, i: int) -> Result:
    sol = model.solve(**_values(i))
    grads = sol.backward({"x": np.arange(6.0)}, dual={"bal": np.ones(2)})
    return np.array(sol.primal["x"]), grads


# ------------------------------------------------------------------ threads


def _worst_error_from_threads(run: Callable[[int], Result], serial: list[Result],
                              cases: int, stride: int) -> float:
    """Eight threads, each making ``cases`` calls ``run(i)`` on one shared model
    with i cycling through the serial results: the largest difference from
    them (x and every gradient); any exception in a thread fails the test."""
    errors: list[BaseException] = []
    worst = [0.0]

    def work(thread: int) -> None:
        try:
            for k in range(cases):
                i = (thread * stride + k) % len(serial)
                x, grads = run(i)
                ref_x, ref_grads = serial[i]
                err = max(float(np.max(np.abs(x - ref_x))),
                          *(float(np.max(np.abs(grads[n] - ref_grads[n]))) for n in grads))
                worst[0] = max(worst[0], err)
        except BaseException as exc:  # noqa: BLE001 - collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    return worst[0]


def test_one_model_from_eight_threads_matches_serial() -> None:
    model = _model()
    serial = [_run(_model(), i) for i in range(17)]
    assert _worst_error_from_threads(lambda i: _run(model, i), serial, 300, 7) <= 1e-12


def _ineq_model() -> dm.Model:
    """Inequalities with K constant (P, A, G fixed): the search's columns of
    K₀⁻¹Gᵀ are formed lazily and shared by every solve of the model."""
    rng = np.random.default_rng(5)
    x = cp.Variable(8, name="x")
    q = cp.Parameter(8, name="q")
    h = cp.Parameter(12, name="h")
    G = rng.standard_normal((12, 8))
    return dm.Model(cp.Minimize(0.5 * cp.sum_squares(x) + q @ x),
                    {"total": cp.sum(x) == 1, "cap": G @ x <= h})


def _ineq_run(model: dm.Model, i: int) -> Result:
    rng = np.random.default_rng(100 + i)
    sol = model.solve(q=3 * rng.standard_normal(8), h=rng.uniform(0.1, 1.0, 12))
    return np.array(sol.primal["x"]), sol.backward({"x": np.arange(8.0)})


def test_an_inequality_model_from_eight_threads_matches_serial() -> None:
    """Active sets differ from value to value (warm starts, the search on
    shared columns, polishing): every thread's results equal serial solves."""
    model = _ineq_model()
    serial, active = [], set()
    for i in range(13):
        fresh = _ineq_model()
        serial.append(_ineq_run(fresh, i))
        assert fresh.solution is not None
        active.add(tuple(np.flatnonzero(fresh.solution.active["cap"])))
    assert len(active) > 3  # (the threads do move between active sets)
    assert _worst_error_from_threads(lambda i: _ineq_run(model, i), serial, 100, 5) <= 1e-12


def test_a_solution_keeps_its_own_derivatives_after_other_solves() -> None:
    model = _model()
    first = model.solve(**_values(0))
    expected = first.backward({"x": np.ones(6)})
    expected_dz = first.derivative({"b": np.ones(2)})
    for i in range(1, 6):
        model.solve(**_values(i))
    grads = first.backward({"x": np.ones(6)})
    dz = first.derivative({"b": np.ones(2)})
    reference = _model().solve(**_values(0)).backward({"x": np.ones(6)})
    for name in grads:
        np.testing.assert_array_equal(grads[name], expected[name])
        np.testing.assert_allclose(grads[name], reference[name], rtol=1e-13, atol=1e-14)
    for name in dz:
        np.testing.assert_array_equal(dz[name], expected_dz[name])


# --------------------------------------------------------- pickles, copies


def test_pickled_model_and_solution_give_identical_answers() -> None:
    model = _model()
    sol = model.solve(**_values(3))
    clone = pickle.loads(pickle.dumps(model))
    again = clone.solve(**_values(3))
    np.testing.assert_array_equal(again.primal["x"], sol.primal["x"])
    for name, grad in sol.backward({"x": np.ones(6)}).items():
        np.testing.assert_array_equal(again.backward({"x": np.ones(6)})[name], grad)
    # A solution pickles without its factorization and rebuilds it to differentiate.
    restored = pickle.loads(pickle.dumps(sol))
    np.testing.assert_array_equal(restored.primal["x"], sol.primal["x"])
    for name, grad in sol.backward({"x": np.ones(6)}).items():
        np.testing.assert_allclose(restored.backward({"x": np.ones(6)})[name], grad,
                                   rtol=1e-14, atol=1e-15)
    # The restored model solves by name with the parameters' values it was pickled with.
    assert set(clone.parameters) == {"A", "b", "q"}
    np.testing.assert_array_equal(clone.solve().primal["x"], sol.primal["x"])


def test_pickled_model_keeps_the_attributes_of_its_variables_and_parameters() -> None:
    x = cp.Variable(3, name="x", nonneg=True)
    y = cp.Variable(2, name="y", bounds=[np.full(2, -1.0), 1.0])
    c = cp.Parameter(3, name="c", bounds=[-np.ones(3), np.ones(3)])
    model = dm.Model(cp.Minimize(cp.sum_squares(x - c) + cp.sum_squares(y - 2)),
                     {"total": cp.sum(x) <= 2})
    clone = pickle.loads(pickle.dumps(model))
    assert clone.variables["x"].attributes["nonneg"]
    np.testing.assert_array_equal(clone.variables["y"].attributes["bounds"][0], -np.ones(2))
    np.testing.assert_array_equal(clone.parameters["c"].attributes["bounds"][1], np.ones(3))
    values = {"c": np.array([0.5, -0.5, 0.2])}
    np.testing.assert_array_equal(clone.solve(**values).primal["x"],
                                  model.solve(**values).primal["x"])
    with pytest.raises(dm.ModelError, match="parameter 'c'.*bounds"):
        clone.solve(c=np.array([5.0, 0.0, 0.0]))


def test_a_solution_has_every_field_of_its_class() -> None:
    # Solution.from_point fills the frozen dataclass's fields directly.
    import dataclasses

    sol = _model().solve(**_values(0))
    assert set(vars(sol)) >= {f.name for f in dataclasses.fields(dm.Solution)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        sol.value = 0.0  # type: ignore[misc]


def test_pickle_is_small_and_carries_no_cvxpy_tree() -> None:
    x = cp.Variable(200, name="x")
    A = cp.Parameter((50, 200), name="A")
    b = cp.Parameter(50, name="b")
    model = dm.Model(cp.Minimize(cp.sum_squares(x)), {"eq": A @ x == b})
    blob = pickle.dumps(model)
    assert b"cvxpy.atoms" not in blob and b"cvxpy.constraints" not in blob
    # The maps hold one coefficient per entry of A: about 12 bytes each, plus names.
    assert len(blob) < 40 * 50 * 200


def test_copies_are_independent() -> None:
    # The reproduction of the issue: after the original re-solves, the copy's
    # gradients must still be its own.
    x = cp.Variable(2, name="x")
    a = cp.Parameter(name="a")
    q = cp.Parameter(2, name="q")
    model = dm.Model(cp.Minimize(cp.sum_squares(x) + q @ x), {"c": a * cp.sum(x) == 1})
    model.solve(a=1.0, q=np.array([0.5, -1.0]))
    for clone in (copy.copy(model), copy.deepcopy(model)):
        expected = clone.backward({"x": np.ones(2)})
        model.solve(a=3.0, q=np.array([2.0, 1.0]))
        got = clone.backward({"x": np.ones(2)})
        for name in got:
            np.testing.assert_array_equal(got[name], expected[name])
        clone.solve(a=2.0)
        model.solve(a=1.0, q=np.array([0.5, -1.0]))
        assert clone.solution is not None and clone.solution.value != model.solution.value


def test_backward_batch_does_not_drop_the_last_solve() -> None:
    x = cp.Variable(2, name="x")
    a = cp.Parameter(name="a")
    q = cp.Parameter(2, name="q")
    model = dm.Model(cp.Minimize(cp.sum_squares(x) + q @ x), {"c": a * cp.sum(x) == 1})
    model.solve(a=1.0, q=[0.0, 0.0])
    model.solve_batch(q=np.zeros((3, 2)))
    model.solve(a=2.0)
    model.backward_batch({"x": np.ones(2)})
    grads = model.backward({"x": np.ones(2)})
    # x = (1/(2a), 1/(2a)): ℓ = sum(x) = 1/a, dℓ/da = −1/a² = −0.25.
    assert grads["a"] == pytest.approx(-0.25, rel=1e-14)


def test_returned_arrays_are_owned_by_the_caller() -> None:
    model = _model()
    sol = model.solve(**_values(1))
    before = sol.backward({"x": np.ones(6)})
    with pytest.raises(ValueError, match="read-only"):
        sol.primal["x"][:] -= 1
    kept = sol.primal["x"].copy()
    mine = sol.primal["x"].copy()
    mine -= 1
    grads = sol.backward({"x": np.ones(6)})
    grads["A"][:] = 0.0  # fresh arrays: changing them changes nothing else
    after = sol.backward({"x": np.ones(6)})
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])
    model.variables["x"].value[:] = 0.0  # the CVXPY side effect is a copy
    np.testing.assert_array_equal(sol.primal["x"], kept)


# ------------------------------------------------------------- import graph

#: Layers from the bottom up: a module may import only modules of lower or
#: equal rank (equal: within its own package). Imports under ``if
#: TYPE_CHECKING:`` serve annotations only and are not counted.
LAYERS: dict[str, int] = {
    "errors": 0, "tolerances": 0, "_typing": 0,
    "linalg": 1,
    "compiled": 2,
    "canon": 3, "solvers": 3,
    "point": 4, "diff": 5, "engine": 5, "chunks": 6, "runner": 6,
    "_validation": 1, "_packing": 6,
    "analysis": 7, "solution": 8,
    "model": 9, "check": 10, "testing": 10,
    "_layer": 10,
    "cli": 11, "torch": 11, "_torch_layer": 11, "jax": 11, "parallel": 11,
    "__main__": 12, "__init__": 12,
}


def _module_name(path: Path) -> str:
    """Dotted name inside the package: ``analysis._common``, ``analysis`` for a
    package's ``__init__.py``, ``__init__`` for the top-level one."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (annotations only)."""
    out: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        out.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return out


def _imports(path: Path) -> set[str]:
    """Modules of diffmodel a file imports at run time (dotted names), at any depth."""
    tree = ast.parse(path.read_text())
    name = _module_name(path)
    is_package = path.name == "__init__.py"
    parts = [] if name == "__init__" else name.split(".")
    package = parts if is_package else parts[:-1]
    found: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and node.module.startswith("diffmodel"):
                    found.add(node.module.removeprefix("diffmodel").lstrip(".") or "__init__")
                continue
            base = package[: len(package) - (node.level - 1)]
            if node.module is None:
                found.update(".".join([*base, alias.name]) for alias in node.names)
            else:
                found.add(".".join([*base, *node.module.split(".")]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("diffmodel."):
                    found.add(alias.name.removeprefix("diffmodel."))
    return {f for f in found if f}


def _graph() -> dict[str, set[str]]:
    files = [p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts]
    modules = {_module_name(p) for p in files}
    graph: dict[str, set[str]] = {}
    for path in files:
        module = _module_name(path)
        targets = set()
        for target in _imports(path):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target:
                targets.add(target)
        graph[module] = targets - {module}
    return graph


def _top(module: str) -> str:
    return module.split(".")[0]


def test_the_graph_sees_imports_out_of_packages() -> None:
    """A check of the checker: edges out of a package's __init__ are seen."""
    graph = _graph()
    assert "analysis.sensitivity" in graph["analysis"]
    assert "linalg.factor" in graph["linalg"]
    assert "engine" in graph["solution"]


def test_imports_respect_the_layers() -> None:
    graph = _graph()
    for module, targets in graph.items():
        top = _top(module)
        assert top in LAYERS, f"{module} has no layer: add it to LAYERS"
        for target in targets:
            other = _top(target)
            if other == top:
                continue
            assert LAYERS[other] <= LAYERS[top], (
                f"{module} (layer {LAYERS[top]}) imports {target} (layer {LAYERS[other]})")


def test_imports_have_no_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
