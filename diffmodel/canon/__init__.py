"""Canonicalization: a CVXPY problem to a :class:`~diffmodel.compiled.CompiledProblem`.

The model is mapped once, at construction, to

    minimize  ½ xᵀ P(θ) x + q(θ)ᵀ x + r(θ)
    subject to  A(θ) x = b(θ),   G(θ) x ≤ h(θ),

with every entry of the data affine in θ. Three stages, one module each:

- :mod:`.affine`: affine CVXPY expressions to coefficient lists;
- :mod:`.objective`: quadratic terms recognized, checked, expanded;
- this module: names, constraints, lifting and assembly of the maps.

A quadratic term whose argument u depends on θ is *lifted*: an auxiliary
variable y and the equality y = u are added, so P stays affine in θ
(``sum_squares(A @ x - b)`` with parameters A, b becomes ``sum_squares(y)``
with ``y == A @ x - b``). Auxiliary variables follow the user's variables in
x and their rows follow the user's equalities in A; they are never named.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import cvxpy as cp
import numpy as np
from cvxpy.constraints.nonpos import Inequality, NonNeg, NonPos
from cvxpy.constraints.zero import Equality, Zero

from .._typing import FloatArray, IntArray
from ..compiled import (
    Block,
    CompiledProblem,
    ConstraintBlock,
    Layout,
    coefficients_to_matrix,
    coefficients_to_vector,
)
from ..errors import ModelError
from .affine import INT, Affine, Walker, describe
from .printer import constraint_text, expression_text
from .objective import (
    QuadTerm,
    check_convex_objective,
    expand_quadratic,
    is_selection,
    objective_terms,
)

__all__ = ["Canonical", "canonicalize"]


# Variable attributes that imply constraints diffmodel does not support.
_UNSUPPORTED_VAR_ATTRS = (
    "pos", "neg", "boolean", "integer", "PSD", "NSD",
    "symmetric", "diag", "hermitian", "complex", "imag", "sparsity",
)


@dataclass(frozen=True)
class Canonical:
    """What canonicalization returns: the compiled problem and the CVXPY leaves by name."""

    problem: CompiledProblem
    variables: dict[str, cp.Variable]
    parameters: dict[str, cp.Parameter]


def _named(objs: list[cp.Expression], kind: str) -> dict[str, cp.Expression]:
    out: dict[str, cp.Expression] = {}
    for obj in sorted(objs, key=lambda o: o.id):
        name = obj.name()
        auto = f"{'var' if kind == 'variable' else 'param'}{obj.id}"
        if getattr(obj, "_name", None) is None or name == auto:
            raise ModelError(
                f"every {kind} needs an explicit name: {kind} of shape "
                f"{tuple(obj.shape)} has none; create it as "
                f"cp.{'Variable' if kind == 'variable' else 'Parameter'}"
                f"({tuple(obj.shape)}, name='...')"
            )
        if name in out:
            raise ModelError(f"two different {kind}s are named '{name}'; names must be unique")
        out[name] = obj
    return out


def _check_variables(variables: Mapping[str, cp.Variable]) -> None:
    for name, var in variables.items():
        for attr in _UNSUPPORTED_VAR_ATTRS:
            if var.attributes.get(attr):
                raise ModelError(
                    f"variable '{name}' is declared {attr}=True; diffmodel supports the "
                    "attributes nonneg, nonpos and bounds of variables: declare a plain "
                    "variable and write the constraint explicitly")


def _bound_rows(walker: Walker, var: cp.Variable, bound: object, upper: bool
                ) -> tuple[Affine, tuple[int, ...]] | None:
    """Rows of ``x ≤ bound`` (or ``bound ≤ x``) as g ≤ 0, and their shape.

    A numeric bound keeps only its finite entries (then the rows form a
    vector of their count); a parameter or expression bound keeps all.
    """
    if bound is None:
        return None
    shape = tuple(var.shape)
    if isinstance(bound, cp.Expression):
        expr = var - bound if upper else bound - var
        return walker.affine(expr), shape
    values = np.broadcast_to(np.asarray(bound, dtype=float), shape)
    finite = np.isfinite(values).ravel(order="F")
    if not finite.any():
        return None
    clean = cp.Constant(np.where(np.isfinite(values), values, 0.0))
    g = walker.affine(var - clean if upper else clean - var)
    if finite.all():
        return g, shape
    keep = finite[g.row]
    renumber = np.cumsum(finite) - 1
    kept = g.take(np.flatnonzero(keep))
    count = int(finite.sum())
    return Affine((count,), renumber[kept.row], kept.p, kept.v, kept.val), (count,)


def _variable_bounds(walker: Walker, variables: Mapping[str, cp.Variable]
                     ) -> list[tuple[str, Affine, tuple[int, ...], str]]:
    """The rows implied by ``nonneg``, ``nonpos`` and ``bounds``, named ``<var>.lower``
    and ``<var>.upper``, with a readable text."""
    out: list[tuple[str, Affine, tuple[int, ...], str]] = []
    for name, var in variables.items():
        walker.context = f"bounds of variable '{name}'"
        declared = var.attributes.get("bounds")
        lower, upper = (declared[0], declared[1]) if isinstance(declared, (list, tuple)) \
            else (None, None)
        if var.attributes.get("nonneg"):
            lower = 0.0 if lower is None else lower
        if var.attributes.get("nonpos"):
            upper = 0.0 if upper is None else upper
        for side, bound, is_upper in (("lower", lower, False), ("upper", upper, True)):
            rows = _bound_rows(walker, var, bound, is_upper)
            if rows is not None:
                text = f"{name} {'<=' if is_upper else '>='} {describe(bound, limit=60)}"
                if not isinstance(bound, cp.Expression):
                    text = f"{name} {'<=' if is_upper else '>='} " + expression_text(
                        cp.Constant(np.asarray(bound, dtype=float)))
                out.append((f"{name}.{side}", rows[0], rows[1], text))
    return out


def _constraint_kind(name: object, con: object, inequalities: bool) -> Literal["eq", "ineq"]:
    """``"eq"`` or ``"ineq"``; a ModelError for anything else."""
    if not isinstance(name, str) or not name:
        raise ModelError(f"constraint names must be non-empty strings, got {name!r}")
    if isinstance(con, (Equality, Zero)):
        return "eq"
    if isinstance(con, (Inequality, NonNeg, NonPos)):
        if not inequalities:
            raise ModelError(
                f"constraint '{name}' ({describe(con)}) is an inequality: inequality "
                "constraints are not supported yet, only equalities (==)"
            )
        return "ineq"
    if isinstance(con, cp.Constraint):
        raise ModelError(
            f"constraint '{name}' ({describe(con)}) is a {type(con).__name__} "
            "constraint; only equality constraints (==) are supported"
        )
    raise ModelError(f"constraint '{name}' is not a CVXPY constraint (got {type(con).__name__})")


def _rows_of(walker: Walker, con: cp.Constraint) -> Affine:
    """The affine g with the constraint read as g = 0 or g ≤ 0."""
    g = walker.affine(con.expr)
    return g.scaled(-1.0) if isinstance(con, NonNeg) else g


def canonicalize(objective: cp.Minimize | cp.Maximize, constraints: dict[str, cp.Constraint],
                 *, inequalities: bool = True) -> Canonical:
    """Compile a CVXPY objective and named constraints.

    Parameters
    ----------
    objective : cp.Minimize or cp.Maximize
        A convex quadratic objective (concave for Maximize).
    constraints : dict of str to cp.Constraint
        Equalities (and, with ``inequalities=True``, ``<=``/``>=``) by name.

    Raises
    ------
    ModelError
        If the model is not a convex QP of the supported kind, or a variable
        or parameter is unnamed or named twice.
    """
    if not isinstance(objective, (cp.Minimize, cp.Maximize)):
        raise ModelError(
            f"the objective must be cp.Minimize or cp.Maximize, got {type(objective).__name__}")
    kinds = {name: _constraint_kind(name, con, inequalities) for name, con in constraints.items()}
    problem = cp.Problem(objective, list(constraints.values()))
    variables = _named(problem.variables(), "variable")
    parameters = _named(problem.parameters(), "parameter")
    _check_variables(variables)
    for name, par in parameters.items():
        if par.is_complex():
            raise ModelError(f"parameter '{name}' is complex; only real parameters are supported")

    var_blocks: dict[str, Block] = {}
    n = 0
    for name, var in variables.items():
        var_blocks[name] = Block(name, n, tuple(var.shape))
        n += var.size
    par_blocks: dict[str, Block] = {}
    n_theta = 0
    for name, par in parameters.items():
        par_blocks[name] = Block(name, n_theta, tuple(par.shape))
        n_theta += par.size
    walker = Walker({var.id: var_blocks[nm].offset + 1 for nm, var in variables.items()},
                    {par.id: par_blocks[nm].offset + 1 for nm, par in parameters.items()},
                    param_names=tuple((b.offset + 1, b.stop + 1, nm)
                                      for nm, b in par_blocks.items()))

    sign = 1.0 if isinstance(objective, cp.Minimize) else -1.0
    check_convex_objective(objective, parameters)
    walker.context = "objective"
    quads: list[QuadTerm] = []
    linear: list[Affine] = []
    one = Affine((), np.zeros(1, dtype=INT), np.zeros(1, dtype=INT), np.zeros(1, dtype=INT),
                 np.array([sign]))
    objective_terms(walker, objective.args[0], one, quads, linear)

    con_blocks: dict[str, ConstraintBlock] = {}
    rows: dict[str, list[tuple[Affine, int]]] = {"eq": [], "ineq": []}
    count = {"eq": 0, "ineq": 0}
    for name, con in constraints.items():
        walker.context = f"constraint '{name}'"
        kind = kinds[name]
        g = _rows_of(walker, con)
        con_blocks[name] = ConstraintBlock(name, count[kind], tuple(con.shape), kind=kind,
                                           text=constraint_text(con))
        rows[kind].append((g, count[kind]))
        count[kind] += g.size
    for name, g, shape, text in _variable_bounds(walker, variables):
        if name in con_blocks:
            raise ModelError(f"a constraint is named {name!r}, which diffmodel uses for the "
                             "bounds of a variable; rename the constraint")
        if not inequalities:
            raise ModelError(f"variable '{name.split('.')[0]}' has bounds: inequality "
                             "constraints are not supported here")
        con_blocks[name] = ConstraintBlock(name, count["ineq"], shape, kind="ineq", text=text)
        rows["ineq"].append((g, count["ineq"]))
        count["ineq"] += g.size

    P_parts: list[tuple[IntArray, IntArray, IntArray, FloatArray]] = []
    n_all = n
    while quads:  # each term is dropped once expanded: the compile's peak memory
        term = quads.pop(0)
        u, W, source = term.u, term.W, term.source
        del term
        if W.size != u.size * u.size:
            raise ModelError(f"objective: weight of {source} does not match its argument")
        if u.has_params or (W.has_params and not is_selection(u)):
            # Lift: y = u, as rows y − u = 0.
            size = u.size
            y = Affine((size,), np.arange(size, dtype=INT), np.zeros(size, dtype=INT),
                       n_all + 1 + np.arange(size, dtype=INT), np.ones(size))
            rows["eq"].append((Affine.concat((size,), [y, u.scaled(-1.0)], [0, 0]),
                               count["eq"]))
            count["eq"] += size
            n_all += size
            u = y
        P_parts.append(expand_quadratic(u, W, linear))
        del u, W

    layout = Layout(variables=var_blocks, constraints=con_blocks, parameters=par_blocks,
                    n=n_all, m_eq=count["eq"], m_ineq=count["ineq"], n_theta=n_theta, sign=sign)
    compiled = _assemble(layout, n, P_parts, linear, rows)
    return Canonical(compiled, dict(variables), dict(parameters))


def _cat_int(parts: list[IntArray]) -> IntArray:
    """The parts end to end, in their own integer type (no copy of a single part)."""
    if not parts:
        return np.zeros(0, dtype=INT)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _cat_float(parts: list[FloatArray]) -> FloatArray:
    if not parts:
        return np.zeros(0)
    return parts[0].astype(np.float64, copy=False) if len(parts) == 1 else np.concatenate(
        parts, dtype=np.float64)


def _assemble(layout: Layout, n_user: int,
              P_parts: list[tuple[IntArray, IntArray, IntArray, FloatArray]],
              linear: list[Affine], rows: dict[str, list[tuple[Affine, int]]]
              ) -> CompiledProblem:
    """The parametric maps of P, q, r, M = [A; G] and c = [b; h]."""
    n, n_theta, m_eq = layout.n, layout.n_theta, layout.m_eq
    P = coefficients_to_matrix(
        _cat_int([t[0] for t in P_parts]), _cat_int([t[1] for t in P_parts]),
        _cat_int([t[2] for t in P_parts]), _cat_float([t[3] for t in P_parts]),
        (n, n), n_theta, by_columns=True)
    lin = Affine.concat((), linear, [0] * len(linear))
    has_x = lin.v > 0
    if np.any(lin.v > n_user):
        raise ModelError("objective: internal error, linear term on an auxiliary variable")
    q = coefficients_to_vector(lin.v[has_x] - 1, lin.p[has_x], lin.val[has_x], n, n_theta)
    r_p = np.asarray(lin.p[~has_x], dtype=INT)
    r_index, r_inverse = np.unique(r_p, return_inverse=True)
    r_value = np.bincount(r_inverse, lin.val[~has_x],
                          minlength=r_index.shape[0]).astype(np.float64)
    eq = Affine.concat((m_eq,), [g for g, _ in rows["eq"]], [o for _, o in rows["eq"]])
    ineq = Affine.concat((layout.m_ineq,), [g for g, _ in rows["ineq"]],
                         [o for _, o in rows["ineq"]])
    g = Affine.concat((layout.rows,), [eq, ineq], [0, m_eq])
    in_M = g.v > 0
    M = coefficients_to_matrix(g.row[in_M], g.v[in_M] - 1, g.p[in_M], g.val[in_M],
                               (layout.rows, n), n_theta, by_columns=False)
    # g = M x − c  ⇒  c = −(the constant part of g).
    c = coefficients_to_vector(g.row[~in_M], g.p[~in_M], -g.val[~in_M], layout.rows, n_theta)
    return CompiledProblem(
        layout=layout, P=P, q=q, r_index=r_index.astype(np.int64), r_value=r_value, M=M, c=c,
        k_theta=np.union1d(P.theta, M.theta).astype(np.int64), p_theta=P.theta,
    )
