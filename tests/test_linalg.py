"""The verified linear algebra under every solve (diffmodel.linalg).

References here are computed independently of the code under test: exact
rational arithmetic (:mod:`fractions`) for dot products and residuals, and
the mpmath/longdouble refinement of tests/reference.py for solutions.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import scipy.sparse as sp

import diffmodel as dm
import diffmodel.linalg.factor as factor_module
from diffmodel.linalg.accuracy import (
    EXTENDED,
    EXTENDED_EPS,
    ExactResidual,
    ExtendedResidual,
    exact_dot,
)
from diffmodel.testing import as_model, banded_qp

EPS = float(np.finfo(float).eps)


def _exact(values: np.ndarray) -> list[Fraction]:
    return [Fraction(float(v)) for v in values]


def _cancelling(rng: np.random.Generator, size: int, digits: int) -> tuple[np.ndarray, np.ndarray]:
    """Vectors whose dot product cancels about ``digits`` decimal digits."""
    a = rng.standard_normal(size) * 10.0 ** rng.uniform(-3, 3, size)
    b = rng.standard_normal(size)
    # Make aᵀb small by moving b's last entry, then nudge it back a little.
    b[-1] = -float(a[:-1] @ b[:-1]) / a[-1]
    b[-1] += 10.0 ** -digits * float(np.abs(a) @ np.abs(b)) / abs(a[-1])
    return a, b


@pytest.mark.parametrize("digits", [0, 2, 6, 12, 15])
def test_exact_dot_is_correctly_rounded_under_cancellation(digits: int) -> None:
    rng = np.random.default_rng(digits)
    a, b = _cancelling(rng, 400, digits)
    exact = sum((x * y for x, y in zip(_exact(a), _exact(b))), Fraction(0))
    got = exact_dot(a, b)
    assert abs(Fraction(got) - exact) <= abs(exact) * Fraction(EPS), (got, float(exact))


def _cancelling_system(seed: int, dim: int = 60) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """A sparse K, a z and an r with r − Kz cancelling to ~1e-12 of its terms."""
    rng = np.random.default_rng(seed)
    K = sp.random(dim, dim, density=0.2, random_state=seed, format="csr")
    K = (K + K.T + sp.eye(dim)).tocsr()
    K.data *= 10.0 ** rng.uniform(-4, 4, K.data.shape[0])
    z = rng.standard_normal(dim) * 10.0 ** rng.uniform(-3, 3, dim)
    r = K @ z
    r *= 1.0 + 1e-12 * rng.standard_normal(dim)
    return K, z, r


def _exact_residual(K: sp.csr_matrix, z: np.ndarray, r: np.ndarray) -> list[Fraction]:
    zf = _exact(z)
    out = []
    for i in range(K.shape[0]):
        lo, hi = K.indptr[i], K.indptr[i + 1]
        row = sum((Fraction(float(v)) * zf[j] for v, j in zip(K.data[lo:hi], K.indices[lo:hi])),
                  Fraction(0))
        out.append(Fraction(float(r[i])) - row)
    return out


def test_exact_residual_is_correctly_rounded() -> None:
    K, z, r = _cancelling_system(0)
    exact = _exact_residual(K, z, r)
    got = ExactResidual(K.indptr, K.indices, K.data)(z, r)
    assert got is not None
    for g, e in zip(got, exact):
        assert abs(Fraction(float(g)) - e) <= abs(e) * Fraction(EPS) / 2


@pytest.mark.skipif(not EXTENDED, reason="np.longdouble is not an extended type on this platform")
def test_extended_residual_error_is_within_its_bound() -> None:
    K, z, r = _cancelling_system(1)
    exact = _exact_residual(K, z, r)
    got = ExtendedResidual(K.indptr, K.indices, K.data)(z, r)
    assert got is not None
    terms = abs(K) @ np.abs(z) + np.abs(r)
    counts = np.diff(K.indptr) + 1
    for g, e, t, k in zip(got, exact, terms, counts):
        bound = Fraction(float(k * EXTENDED_EPS * t)) + abs(e) * Fraction(EPS)
        assert abs(Fraction(float(g)) - e) <= bound
    # ... which is far below what double precision gives on the same rows.
    plain = r - K @ z
    worst_plain = max(abs(Fraction(float(p)) - e) / abs(e) for p, e in zip(plain, exact))
    worst_ext = max(abs(Fraction(float(g)) - e) / abs(e) for g, e in zip(got, exact))
    assert worst_ext < worst_plain / 100


def _ladder(sol: dm.Solution) -> list[object]:
    assert sol._point is not None
    return sol._point.factorization._ladder


def test_the_ladder_is_climbed_only_when_the_kernel_is_the_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A componentwise backward error that stays above the target once the
    residual is at the roundoff is the floor of the residual's own rounding:
    no more exact kernel lowers it, so none is built for it (a SuperLU of a
    large K costs seconds and gigabytes)."""
    data = banded_qp(1000)  # sparse path, well conditioned
    monkeypatch.setattr(factor_module, "REFINE_TARGET", 0.0)  # never reached
    monkeypatch.setattr(factor_module, "REFINE_GOAL", 0.0)
    model, _ = as_model(data, parameters=("q", "b"))
    rng = np.random.default_rng(3)
    for _ in range(3):
        sol = model.solve(q=data.q + rng.standard_normal(data.n),
                          b=data.b + rng.standard_normal(data.m))
        assert len(_ladder(sol)) == 1
        assert sol.accuracy < 1e-13


def test_the_ladder_is_climbed_when_refinement_stalls(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a regularization so large that refinement cannot contract, the
    next rungs are built and the solve is still exact."""
    data = banded_qp(1000)
    model, _ = as_model(data, parameters=("q", "b"))
    reference = model.solve(q=data.q, b=data.b)
    monkeypatch.setattr(factor_module, "REGULARIZATION", 1e2)
    monkeypatch.setattr(factor_module, "_DELTA_STEP", 1e-1)
    stalled, _ = as_model(data, parameters=("q", "b"))
    sol = stalled.solve(q=data.q, b=data.b)
    assert len(_ladder(sol)) > 1
    err = np.max(np.abs(sol.primal["x"] - reference.primal["x"]))
    assert err <= 1e-13 * np.max(np.abs(reference.primal["x"]))


def test_full_pattern_rows_are_sorted_and_map_to_the_upper_entries() -> None:
    """KKTPattern's row-wise full pattern: each row sorted, and K = U + strict(U)ᵀ."""
    from diffmodel.linalg.kkt import _full

    rng = np.random.default_rng(5)
    for trial in range(50):
        dim = int(rng.integers(1, 40))
        A = sp.random(dim, dim, density=float(rng.uniform(0, 0.4)), random_state=trial)
        U = sp.csc_matrix(sp.triu(A + A.T) + sp.eye(dim))
        U.sort_indices()
        indptr, indices, src = _full(U.indptr.astype(np.int64), U.indices, dim)
        full = sp.csr_matrix((U.data[src], indices, indptr), shape=(dim, dim))
        np.testing.assert_array_equal(full.toarray(), (U + sp.triu(U, k=1).T).toarray())
        assert full.has_sorted_indices



def test_dense_ruiz_gives_the_sparse_factors_bit_for_bit() -> None:
    """The dense path equilibrates with ruiz_dense: the same powers of two as the
    CSR version, on matrices scaled over many orders of magnitude (with zero rows)."""
    from diffmodel.linalg.scaling import ruiz, ruiz_dense

    rng = np.random.default_rng(11)
    for trial in range(30):
        dim = int(rng.integers(1, 40))
        A = sp.random(dim, dim, density=float(rng.uniform(0.05, 1.0)), random_state=trial)
        d = 10.0 ** rng.uniform(-8, 8, dim)
        K = sp.csr_matrix(sp.diags(d) @ (A + A.T) @ sp.diags(d))
        K.sort_indices()
        sparse = ruiz(K.indptr, K.indices, np.abs(K.data))
        dense = ruiz_dense(np.abs(K.toarray()))
        np.testing.assert_array_equal(dense, sparse)


@pytest.mark.parametrize("vary_A", [False, True], ids=["A constant", "A parameter"])
def test_large_dense_kkt_is_exact_with_rows_and_columns_scaled_by_1e6(vary_A: bool) -> None:
    """A mostly dense KKT system of 450 rows takes LAPACK's dense path; with the
    variables and rows scaled by powers of two over 2^±20 (about 1e±6) it still
    gives the solution known by construction, in the user's units."""
    from diffmodel.testing import QPData

    rng = np.random.default_rng(23)
    n, m = 300, 150
    U = np.linalg.qr(rng.standard_normal((n, n)))[0]
    P0 = (U * rng.uniform(1.0, 4.0, n)) @ U.T
    P0 = 0.5 * (P0 + P0.T)
    A0 = rng.standard_normal((m, n)) / np.sqrt(n) + 2.0 * np.eye(m, n)
    x0, nu0 = rng.standard_normal(n), rng.standard_normal(m)
    q0, b0 = -(P0 @ x0 + A0.T @ nu0), A0 @ x0
    D = 2.0 ** rng.integers(-20, 21, n)  # exact scalings: the scaled data are exact too
    E = 2.0 ** rng.integers(-20, 21, m)
    data = QPData("dense-scaled", sp.csc_matrix(D[:, None] * P0 * D[None, :]), D * q0,
                  sp.csc_matrix(E[:, None] * A0 * D[None, :]), E * b0)
    model, values = as_model(data, parameters=("q", "b", "A") if vary_A else ("q", "b"))
    sol = model.solve(**values)
    fact = sol._point.factorization
    assert fact.dim == n + m > 400 and fact.kind == "dense"
    # x = D⁻¹x₀ and ν = E⁻¹ν₀, to working accuracy
    np.testing.assert_allclose(D * sol.primal["x"], x0, rtol=0, atol=1e-10 * np.abs(x0).max())
    np.testing.assert_allclose(E * sol.dual["eq"], nu0, rtol=0, atol=1e-10 * np.abs(nu0).max())


@pytest.mark.parametrize("size", [7, 40, 300])
def test_dense_ldl_inertia_and_solve_match_the_eigenvalues(size: int) -> None:
    """The blocked Bunch–Kaufman kernel: inertia as counted from its 1×1 and
    2×2 pivots equals the eigenvalues' signs; its solve is exact to roundoff."""
    from diffmodel.linalg.kernels import DenseLDL

    rng = np.random.default_rng(size)
    n = size * 2 // 3
    M = rng.standard_normal((n, n))
    P = 1e-3 * (M @ M.T)  # small against A: Bunch–Kaufman pairs rows in 2×2 pivots
    A = rng.standard_normal((size - n, n))
    K = np.block([[P, A.T], [A, np.zeros((size - n, size - n))]])
    K[:2, :2] -= np.eye(2)  # and negative curvature, so that either sign occurs
    ldl = DenseLDL(K.copy())
    assert np.any(ldl.ipiv < 0)  # the case has 2×2 pivots
    lam = np.linalg.eigvalsh(K)
    assert ldl.inertia() == (int(np.sum(lam > 0)), int(np.sum(lam < 0)))
    rhs = rng.standard_normal(size)
    z = ldl.solve(rhs)
    assert np.linalg.norm(K @ z - rhs) <= 1e-12 * np.linalg.norm(K, 1) * np.linalg.norm(z)


def test_block_backward_errors_equal_the_single_column_ones() -> None:
    """The blocked ω of refinement on many right-hand sides equals, bit for bit,
    the one-column version on each column: rows in I₁ and I₂, zero rows, zero
    columns, zero residuals and tiny magnitudes."""
    from diffmodel.linalg.accuracy import backward_error, backward_errors

    rng = np.random.default_rng(0)
    for _ in range(500):
        N, k = int(rng.integers(1, 30)), int(rng.integers(1, 6))
        R = rng.standard_normal((N, k)) * 10.0 ** rng.integers(-20, 2, (N, k))
        akz = np.abs(rng.standard_normal((N, k))) * 10.0 ** rng.integers(-25, 2, (N, k))
        rhs = rng.standard_normal((N, k)) * (rng.random((N, k)) < 0.5)
        row_norm = np.abs(rng.standard_normal(N)) * (rng.random(N) < 0.9)
        z_norms = np.abs(rng.standard_normal(k)) * (rng.random(k) < 0.9)
        R[rng.random((N, k)) < 0.1] = 0.0
        akz[rng.random((N, k)) < 0.1] = 0.0
        before = [a.copy() for a in (R, akz, rhs)]
        got = backward_errors(R, akz, rhs, row_norm, z_norms)
        want = [backward_error(R[:, j], akz[:, j], rhs[:, j], row_norm, float(z_norms[j]))
                for j in range(k)]
        np.testing.assert_array_equal(got, want)
        for a, b in zip((R, akz, rhs), before):
            np.testing.assert_array_equal(a, b)  # inputs untouched


def test_a_block_of_equal_right_hand_sides_is_solved_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A loss gradient broadcast over a batch sharing K gives a block of equal
    columns: one kernel solve per refinement step serves them all, and each
    column equals the block solve of distinct columns bit for bit."""
    data = banded_qp(300)
    model, values = as_model(data, parameters=("q", "b"))
    fact = model.solve(**values)._point.factorization
    rng = np.random.default_rng(4)
    g = rng.standard_normal(fact.dim) * 10.0 ** rng.integers(-6, 7, fact.dim)
    other = rng.standard_normal(fact.dim)
    mixed_z, mixed_omega, mixed_acc = fact.solve_many(np.column_stack([g, other, g]))
    columns: list[int] = []
    kernel_block = factor_module.Factorization._kernel_block

    def counting(kernel: object, R: np.ndarray) -> np.ndarray:
        columns.append(R.shape[1])
        return kernel_block(kernel, R)

    monkeypatch.setattr(factor_module.Factorization, "_kernel_block", staticmethod(counting))
    Z, omega, acc = fact.solve_many(np.repeat(g[:, None], 50, axis=1))
    assert columns and set(columns) == {1}
    for j in range(50):
        np.testing.assert_array_equal(Z[:, j], mixed_z[:, 0])
    np.testing.assert_array_equal(omega, np.full(50, mixed_omega[0]))
    np.testing.assert_array_equal(acc, np.full(50, mixed_acc[0]))
    assert np.linalg.norm(fact.times(Z[:, 0]) - g) <= 1e-12 * np.linalg.norm(g)


def test_a_dense_active_set_system_is_taken_from_one_dense_k_bit_for_bit() -> None:
    """On the dense path, K over a set of rows is cut from one dense K over all
    rows per parameter value (no pattern per active set): the same matrix,
    entry for entry, as assembled from its own pattern, and the same factors."""
    import cvxpy as cp

    from diffmodel.engine import Engine
    from diffmodel.linalg import Factorization, KKTPattern

    rng = np.random.default_rng(9)
    n, m_eq, m_in = 12, 3, 9
    x = cp.Variable(n, name="x")
    P = cp.Parameter((n, n), name="P", PSD=True)
    A = cp.Parameter((m_eq, n), name="A")
    G = cp.Parameter((m_in, n), name="G")
    model = dm.Model(cp.Minimize(0.5 * cp.quad_form(x, P)),
                     {"eq": A @ x == 1, "cap": G @ x <= 1})
    M = rng.standard_normal((n, n))
    P.value = M @ M.T + np.eye(n)
    A.value = rng.standard_normal((m_eq, n))
    G.value = rng.standard_normal((m_in, n)) * 10.0 ** rng.integers(-3, 4, (m_in, 1))
    engine = Engine(model.compiled)
    theta, _ = model._packer.theta({}, model._current_value, "test")
    data, k_values = engine.data(theta)
    cache = engine.cache
    problem = model.compiled
    for trial in range(7):
        rows = (np.arange(m_eq + m_in) if trial == 0 else  # every row: assembled directly
                np.concatenate([np.arange(m_eq), m_eq + np.flatnonzero(rng.random(m_in) < 0.5)]))
        assert cache.dense(rows)
        pattern = KKTPattern.build(n, problem.P.indptr, problem.P.indices, problem.M.indptr,
                                   problem.M.indices, rows)
        want = pattern.dense(pattern.assemble(data.P_data, data.M_data))
        got = cache._dense_k(data, k_values, rows)
        np.testing.assert_array_equal(got, want)
        a = Factorization(pattern, pattern.assemble(data.P_data, data.M_data), need_inertia=True)
        b = Factorization.from_dense(n, rows.shape[0], got, reused=False)
        rhs = rng.standard_normal(n + rows.shape[0])
        np.testing.assert_array_equal(a.solve(rhs).z, b.solve(rhs).z)
        assert a.inertia == b.inertia and a.cond == b.cond


def test_held_bytes_counts_each_buffer_once_and_what_objects_hold_in_c() -> None:
    """The memory accounting of kept points: an array and its views count
    once; a sparse matrix counts its data, indices and pointers; attributes
    are followed; an object's ``c_bytes()`` is added (QDLDL's factor); and a
    sparse factorization's count covers at least its arrays and the nonzeros
    of L (12 bytes each: value and row index)."""
    from diffmodel.linalg import held_bytes

    a = np.zeros(1000)
    assert held_bytes(a, a[:10], a.reshape(10, 100).T) == 8000
    S = sp.random(50, 50, density=0.1, format="csr", random_state=0)
    assert held_bytes(S) == S.data.nbytes + S.indices.nbytes + S.indptr.nbytes

    class Holder:
        def __init__(self) -> None:
            self.parts = (a, [np.ones(10)])

        def c_bytes(self) -> int:
            return 123

    assert held_bytes(Holder(), a) == 8000 + 80 + 123
    data = banded_qp(300)
    model, _ = as_model(data, parameters=("q", "b"))
    fact = model.solve()._point.raw.factorization
    assert fact is not None and fact.kind == "ldl"
    L = fact._ladder[-1].solver.factors()[0]
    assert fact.nbytes >= 12 * L.nnz + fact._K.data.nbytes + fact.scale.nbytes
