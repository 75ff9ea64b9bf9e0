"""Learn the cost of a QP layer from observed decisions (OptNet style, PyTorch).

A decision maker allocates a budget over n assets by solving

    minimize  ½‖x‖² + qᵀx   subject to  1ᵀx = 1,  x ≥ 0,

with a cost q = W z that depends on observed features z through an unknown
matrix W. We see features and the decisions x* they led to, and recover W by
gradient descent through the QP: ``diffmodel.torch.Layer`` solves the batch
of QPs and differentiates the decisions with respect to q exactly (through
the active set of each item), and autograd carries the gradient on to W.

Run ``python examples/learn_qp.py`` (a few seconds: 40 steps on 32 samples;
the test suite runs it so), or with ``--large`` for 150 steps on 128 samples.
The script checks that the loss falls by a factor of at least 100 and that
the decisions of the learned W match held-out observations.
"""

from __future__ import annotations

import argparse
import time

import cvxpy as cp
import torch

import diffmodel as dm
from diffmodel.torch import Layer

#: The loss must fall at least this much.
FACTOR = 100.0


def allocation_model(n: int) -> dm.Model:
    """minimize ½‖x‖² + qᵀx s.t. 1ᵀx = 1 ("budget"), x ≥ 0 ("long")."""
    x = cp.Variable(n, name="x")
    q = cp.Parameter(n, name="q")
    return dm.Model(cp.Minimize(0.5 * cp.sum_squares(x) + q @ x),
                    {"budget": cp.sum(x) == 1, "long": x >= 0})


def main(large: bool) -> float:
    torch.manual_seed(0)
    n, d = 6, 3
    samples, steps = (128, 150) if large else (32, 40)
    layer = Layer(allocation_model(n))

    # The hidden truth and the observations it produces.
    W_true = 0.6 * torch.randn(n, d, dtype=torch.float64)
    Z = torch.randn(samples, d, dtype=torch.float64)
    Z_test = torch.randn(32, d, dtype=torch.float64)
    with torch.no_grad():
        X_obs = layer(q=Z @ W_true.T)["x"]
        X_test = layer(q=Z_test @ W_true.T)["x"]

    # Learn W from (Z, X_obs), starting from zero.
    W = torch.zeros(n, d, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([W], lr=0.1)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.98)
    start = time.perf_counter()
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        X = layer(q=Z @ W.T)["x"]            # one batched solve of `samples` QPs
        loss = ((X - X_obs) ** 2).sum(dim=1).mean()
        loss.backward()                       # exact gradients through the QPs
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if step % 10 == 0 or step == steps - 1:
            print(f"step {step:4d}  loss {losses[-1]:.3e}")
    seconds = time.perf_counter() - start

    with torch.no_grad():
        test_error = float(((layer(q=Z_test @ W.T)["x"] - X_test) ** 2).sum(dim=1).mean())
    fall = losses[0] / losses[-1]
    print(f"{steps} steps of {samples} QPs in {seconds:.1f} s; the loss fell "
          f"{fall:.0f}x ({losses[0]:.2e} -> {losses[-1]:.2e}); held-out error {test_error:.1e}")
    if not fall >= FACTOR:
        raise SystemExit(f"the loss fell only {fall:.1f}x (expected at least {FACTOR:.0f}x)")
    if not test_error <= 10 * losses[-1] + 1e-6:
        raise SystemExit(f"held-out error {test_error:.2e} does not match the training loss")
    return fall


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="more samples and steps")
    main(parser.parse_args().large)
