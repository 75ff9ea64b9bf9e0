"""Test problems: seeded random equality QPs and Maros–Mészáros instances.

These build ordinary :class:`~diffmodel.Model` objects with named parameters
``q`` and ``b`` (and, for :func:`random_qp`, optionally ``A``), so tests,
benchmarks and users can exercise the library on the same problems.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cvxpy as cp
import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from .errors import ModelError
from .model import Model

__all__ = ["QPData", "random_qp", "banded_qp", "load_maros_meszaros", "as_model",
           "maros_meszaros_dir", "MAROS_MESZAROS_OPTIMA"]


@dataclass(frozen=True)
class QPData:
    """Numeric data of ``minimize ½xᵀPx + qᵀx + r subject to Ax = b``.

    ``P`` is symmetric positive semidefinite (both triangles stored).
    ``G``, ``lower``, ``upper`` hold the rows ``lower ≤ Gx ≤ upper`` that a
    source problem had besides its equalities (±inf where a side is absent);
    they are not part of this equality QP (see :func:`load_maros_meszaros`).
    """

    name: str
    P: sp.csc_matrix
    q: NDArray[np.float64]
    A: sp.csc_matrix
    b: NDArray[np.float64]
    r: float = 0.0
    G: sp.csc_matrix | None = None
    lower: NDArray[np.float64] | None = None
    upper: NDArray[np.float64] | None = None

    @property
    def n(self) -> int:
        return int(self.P.shape[0])

    @property
    def m(self) -> int:
        return int(self.A.shape[0])

    def kkt(self) -> sp.csc_matrix:
        """The KKT matrix [[P, Aᵀ], [A, 0]]."""
        blocks: list[list[Any]] = [[self.P, self.A.T], [self.A, None]]
        return sp.csc_matrix(sp.bmat(blocks))


def random_qp(n: int, m: int, seed: int = 0, density: float = 1.0) -> QPData:
    """A well-conditioned random equality QP (P ≻ 0, A of full row rank).

    Parameters
    ----------
    n, m : int
        Numbers of variables and of equality constraints (m < n).
    seed : int
        Seed of the generator.
    density : float
        Fraction of nonzeros of the random parts of P and A.

    Raises
    ------
    ValueError
        Unless 0 <= m < n.
    """
    if not 0 <= m < n:
        raise ValueError(f"need 0 <= m < n, got n={n}, m={m}")
    rng = np.random.default_rng(seed)
    M = sp.random(n, n, density=density, random_state=rng, data_rvs=rng.standard_normal)
    P = sp.csc_matrix(M @ M.T / max(1.0, density * n) + sp.identity(n))
    R = sp.random(m, n, density=density, random_state=rng, data_rvs=rng.standard_normal)
    A = sp.csc_matrix(R + sp.eye(m, n) * 2.0)
    return QPData(f"random_{n}x{m}_s{seed}", P, rng.standard_normal(n), A,
                  rng.standard_normal(m))


def banded_qp(n: int, seed: int = 0, bandwidth: int = 2) -> QPData:
    """A sparse banded equality QP with m = n / 2 constraints.

    P = B Bᵀ + I with B banded, A = [2I + banded part] of shape (n/2, n):
    the kind of structure of discretized control and estimation problems.
    """
    rng = np.random.default_rng(seed)
    m = n // 2
    offsets = list(range(-bandwidth, bandwidth + 1))
    bands: list[NDArray[np.float64]] = [0.3 * rng.standard_normal(n - abs(k)) for k in offsets]
    # scipy-stubs types the bands of diags as Never: a false positive.
    B = sp.csc_matrix(sp.diags(bands, offsets, shape=(n, n)))  # type: ignore[arg-type]
    P = sp.csc_matrix(B @ B.T + sp.identity(n))
    rows: list[NDArray[np.float64]] = [
        2.0 + rng.random(m), 0.3 * rng.standard_normal(m), 0.3 * rng.standard_normal(m)]
    A = sp.csc_matrix(sp.diags(rows, [0, 1, 2], shape=(m, n)))  # type: ignore[arg-type]  # as above
    return QPData(f"banded_{n}", P, rng.standard_normal(n), sp.csc_matrix(A),
                  rng.standard_normal(m))


def maros_meszaros_dir() -> Path | None:
    """The folder of Maros–Mészáros ``.mat`` files, if present.

    Looks at ``$DIFFMODEL_MAROS_MESZAROS`` and then at
    ``../shared/data/maros-meszaros`` beside the repository.
    """
    import os

    env = os.environ.get("DIFFMODEL_MAROS_MESZAROS")
    candidates = [Path(env)] if env else []
    root = Path(__file__).resolve().parent.parent
    candidates.append(root.parent / "shared" / "data" / "maros-meszaros")
    for path in candidates:
        if path.is_dir():
            return path
    return None


#: Published optimal values of the instances used in the tests (Maros and
#: Mészáros 1999, 8 significant digits), constant term r included.
MAROS_MESZAROS_OPTIMA = {
    "AUG2DC": 1.8183681e+06, "AUG3D": 5.5406773e+02, "AUG3DC": 7.7126244e+02,
    "DPKLO1": 3.7009622e-01, "DTOC3": 2.3526248e+02, "GENHS28": 9.2717369e-01,
    "HS51": 0.0, "HS52": 5.3266476e+00, "HS53": 4.0930233e+00, "TAME": 0.0,
    "UBH1": 1.1160008e+00,
}


def load_maros_meszaros(name: str, folder: Path | str | None = None) -> QPData:
    """Load a Maros–Mészáros instance as its equality-constrained QP.

    Rows with l = u become ``A x = b``; the other rows (bounds, one-sided or
    ranged inequalities, free rows) are kept aside in ``G``, ``lower`` and
    ``upper``. The equality QP is the same problem when those rows hold
    strictly at its optimum: true for the instances the data's README lists
    as equality QPs or as having inactive bounds (±1e20 is read as ±inf).

    Raises
    ------
    FileNotFoundError
        If the data folder or the file is missing.
    """
    from scipy.io import loadmat

    base = Path(folder) if folder is not None else maros_meszaros_dir()
    if base is None:
        raise FileNotFoundError("Maros–Mészáros data folder not found")
    data = loadmat(str(base / f"{name}.mat"))
    P = sp.csc_matrix(data["P"], dtype=float)
    A = sp.csr_matrix(data["A"], dtype=float)
    lo, up = data["l"].ravel().astype(float), data["u"].ravel().astype(float)
    eq = lo == up
    other = np.flatnonzero(~eq)
    lower = np.where(lo[other] <= -1e20, -np.inf, lo[other])
    upper = np.where(up[other] >= 1e20, np.inf, up[other])
    return QPData(name, P, data["q"].ravel().astype(float), sp.csc_matrix(A[np.flatnonzero(eq)]),
                  lo[eq], float(np.asarray(data["r"]).ravel()[0]),
                  sp.csc_matrix(A[other]), lower, upper)


def as_model(data: QPData, parameters: tuple[str, ...] = ("q", "b"),
             solver: str = "kkt") -> tuple[Model, dict[str, NDArray[np.float64]]]:
    """A :class:`Model` of ``data`` with the named parts as parameters.

    Parameters
    ----------
    data : QPData
    parameters : tuple of {"q", "b", "A"}
        Which parts become ``cp.Parameter`` objects (the others are constants).
        A parameter ``A`` is dense (one parameter entry per matrix entry).
    solver : str
        Default backend of the model.

    Returns
    -------
    model : Model
    values : dict of str to ndarray
        The parameters' values (also set as ``Parameter.value``).
    """
    unknown = set(parameters) - {"q", "b", "A"}
    if unknown:
        raise ModelError(f"as_model(): unknown parts {sorted(unknown)}; use q, b or A")
    n, m = data.n, data.m
    x = cp.Variable(n, name="x")
    values: dict[str, NDArray[np.float64]] = {}

    def part(key: str, value: object, shape: tuple[int, ...]) -> object:
        if key not in parameters:
            return value
        sparse: Any = value  # a SciPy sparse matrix or array, or something dense
        dense = (np.asarray(sparse.toarray()) if isinstance(value, (sp.spmatrix, sp.sparray))
                 else np.asarray(value))
        values[key] = dense
        return cp.Parameter(shape, name=key, value=dense)

    q = part("q", data.q, (n,))
    b = part("b", data.b, (m,))
    A = part("A", data.A, (m, n))
    # CVXPY's type stubs omit quad_form from its namespace; it is there at run time.
    quadratic = cp.quad_form(x, data.P, assume_PSD=True)  # type: ignore[attr-defined]
    objective = cp.Minimize(0.5 * quadratic + q @ x + data.r)
    model = Model(objective, {"eq": A @ x == b} if m else {}, solver=solver)
    return model, values
