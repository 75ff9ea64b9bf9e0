"""Compare sparse factorizations of the KKT matrix on the benchmark families.

    python benchmarks/factorizations.py

For each problem: the fill (stored factor entries) and the times of a first
factorization, a numeric refactorization with the same pattern, and one
solve, for

- QDLDL on K + δ diag(I, −I) with its AMD ordering (diffmodel's choice);
  the solve includes the refinement steps needed to reach a relative
  residual of 1e-14 (one, typically);
- SciPy's SuperLU (``splu``) of the exact K with its orderings COLAMD
  (the default) and MMD on Aᵀ + A, which has no separate numeric
  refactorization.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import matrix_parameter_qp  # noqa: E402

from diffmodel.testing import banded_qp, random_qp  # noqa: E402


def _median(fn, reps: int = 5) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> int:
    import qdldl

    problems = [random_qp(50, 25, seed=2), random_qp(1000, 500, seed=3, density=0.003),
                banded_qp(1000), banded_qp(5000), banded_qp(20000),
                matrix_parameter_qp(200, 1000)]
    print("| problem | nnz(K) | method | fill (factor entries) | factor | refactor | solve |")
    print("|---|---|---|---|---|---|---|")
    for data in problems:
        K = data.kkt()
        n, m = data.n, data.m
        delta = 1e-9 * abs(K).max()  # a bare static regularization
        upper = sp.triu(K + sp.diags(np.r_[np.full(n, delta), np.full(m, -delta)]), format="csc")
        rhs = np.random.default_rng(0).standard_normal(n + m)
        t0 = time.perf_counter()
        solver = qdldl.Solver(upper, upper=True)
        first = time.perf_counter() - t0
        refactor = _median(lambda: solver.update(upper, upper=True))
        L, _, _ = solver.factors()

        K_csr = K.tocsr()
        norm_K = abs(K).max()

        def refined() -> np.ndarray:
            z = solver.solve(rhs)
            for _ in range(4):
                r = rhs - K_csr @ z
                if abs(r).max() <= 1e-14 * (norm_K * abs(z).max() + abs(rhs).max()):
                    break
                z = z + solver.solve(r)
            return z

        solve = _median(refined)
        print(f"| {data.name} | {K.nnz} | QDLDL + AMD (δ-regularized, refined) | "
              f"{L.nnz + n + m} | {first * 1e3:.1f} ms | {refactor * 1e3:.2f} ms | "
              f"{solve * 1e3:.3f} ms |")
        for spec in ("COLAMD", "MMD_AT_PLUS_A"):
            t0 = time.perf_counter()
            lu = splu(K, permc_spec=spec)
            first = time.perf_counter() - t0
            solve = _median(lambda: lu.solve(rhs))
            print(f"| {data.name} | {K.nnz} | SuperLU + {spec} | {lu.L.nnz + lu.U.nnz} | "
                  f"{first * 1e3:.1f} ms | — | {solve * 1e3:.3f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
