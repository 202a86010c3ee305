"""Sensitivity, continuous-rotation and insensitivity-control measures beside G-EED.

* :func:`jacobian_spectral_norm` -- the largest singular value of the input-output Jacobian of each
  sample, by power iteration on J^T J with Jacobian-vector and vector-Jacobian products (Moskalev et
  al. 2023 track it as "sensitivity"). No Jacobian is ever formed.
* :func:`lie_derivative` -- the derivative of the output along a continuous rotation of the input,
  ``d/dtheta f(R_theta x)`` at theta = 0: the Jacobian-vector product of f with the rotation's
  tangent image (one product per batch), per-sample norm.
* :func:`perturbation_control` -- the insensitivity control: for each x and g, a random perturbation
  of the same l2 size as ``g x - x``; a model that is invariant only because it ignores its input
  responds as little to these as to the group. The ratio of the two responses separates invariance
  from insensitivity (near 0: group-specific invariance; near 1: the group is treated like noise).

Models are evaluated in eval mode; batch norm in eval mode keeps samples independent, which the
batched power iteration relies on.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geed.groups import Group, get_group

__all__ = ["jacobian_spectral_norm", "lie_derivative", "rotate_differentiable", "rotation_tangent", "perturbation_control"]


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


def _jvp(model: Callable, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """J v by forward mode where every operation supports it, else by the double-backward trick."""
    try:
        return torch.func.jvp(model, (x,), (v,))[1]
    except (NotImplementedError, RuntimeError):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            y = model(xg)
            u = torch.zeros_like(y, requires_grad=True)
            (jtu,) = torch.autograd.grad(y, xg, u, create_graph=True)
            (jv,) = torch.autograd.grad(jtu, u, v)
        return jv.detach()


def _vjp(model: Callable, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xg), xg, u)
    return g.detach()


def jacobian_spectral_norm(model: nn.Module | Callable, x: torch.Tensor, n_iter: int = 30, seed: int = 0,
                           tol: float = 1e-9) -> np.ndarray:
    """Per-sample largest singular value of d model(x) / d x (power iteration on J^T J)."""
    if n_iter < 1:
        raise ValueError(f"n_iter must be positive; got {n_iter}")
    x = x.detach()
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
    v = v / _per_sample_norm(v).view(-1, *[1] * (x.dim() - 1))
    sigma = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for _ in range(n_iter):
        jv = _jvp(model, x, v)
        jtjv = _vjp(model, x, jv)
        new_sigma = _per_sample_norm(jv)
        norms = _per_sample_norm(jtjv).clamp_min(1e-30)
        v = jtjv / norms.view(-1, *[1] * (x.dim() - 1))
        converged = torch.all((new_sigma - sigma).abs() <= tol * new_sigma.clamp_min(1e-30))
        sigma = new_sigma
        if converged:
            break
    return sigma.detach().double().cpu().numpy()


def rotate_differentiable(x: torch.Tensor, angle_rad: torch.Tensor) -> torch.Tensor:
    """Bilinear rotation of ``x`` (N, C, H, W) by a scalar tensor angle (radians), differentiable in the angle.
    Same convention as :func:`geed.groups.rotate` (counter-clockwise on screen)."""
    c, s = torch.cos(angle_rad), torch.sin(angle_rad)
    zero = torch.zeros_like(c)
    h, w = x.shape[-2], x.shape[-1]
    mat = torch.stack([torch.stack([c, -s * h / w, zero]), torch.stack([s * w / h, c, zero])]).to(x.dtype)
    grid = F.affine_grid(mat.unsqueeze(0).expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def lie_derivative(model: nn.Module | Callable, x: torch.Tensor, mask: bool = True) -> np.ndarray:
    """Per-sample l2 norm of ``d/dtheta f(R_theta x)`` at theta = 0 (per radian).

    Zero for a model exactly invariant under continuous rotation; it measures local (infinitesimal)
    invariance, where C8-EED measures it at 45-degree steps.
    """
    from geed.groups import disc_mask

    x = x.detach()
    if mask:
        x = x * disc_mask(x.shape[-2], x.shape[-1], like=x)
    tangent = rotation_tangent(x)
    d = _jvp(model, x, tangent)
    return _per_sample_norm(d).detach().double().cpu().numpy()


def rotation_tangent(x: torch.Tensor, h: float = 1e-4) -> torch.Tensor:
    """``d/dtheta R_theta x`` at 0 (per radian) of the bilinear rotation, by a central difference in
    float64 (the interpolant is piecewise linear in theta, so this is its derivative up to O(h^2))."""
    x64 = x.to(torch.float64)
    plus = rotate_differentiable(x64, torch.tensor(h, dtype=torch.float64, device=x.device))
    minus = rotate_differentiable(x64, torch.tensor(-h, dtype=torch.float64, device=x.device))
    return ((plus - minus) / (2 * h)).to(x.dtype)


def perturbation_control(model: nn.Module, x: torch.Tensor, group: Group | str, seed: int = 0,
                         output: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, np.ndarray]:
    """Response of ``output(model(.))`` (default: softmax) to group transformations and to random
    perturbations of the same size, per (sample, non-identity element).

    Returns ``group`` and ``random`` (l2 change of the output, shape (N, |G|-1)) and ``ratio``, the
    per-sample ratio of mean group response to mean random response.
    """
    group = get_group(group)
    out_fn = output or (lambda logits: torch.softmax(logits, dim=-1))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ref = out_fn(model(group.act(x, 0)))
        resp_g, resp_r = [], []
        for i in range(1, len(group)):
            gx = group.act(x, i)
            delta = gx - group.act(x, 0)
            size = _per_sample_norm(delta)
            noise = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
            if group.mask:
                from geed.groups import disc_mask

                noise = noise * disc_mask(x.shape[-2], x.shape[-1], like=x)
            noise = noise / _per_sample_norm(noise).clamp_min(1e-30).view(-1, 1, 1, 1) * size.view(-1, 1, 1, 1)
            resp_g.append(_per_sample_norm(out_fn(model(gx)) - ref))
            resp_r.append(_per_sample_norm(out_fn(model(group.act(x, 0) + noise)) - ref))
    g_arr = torch.stack(resp_g, 1).double().cpu().numpy()
    r_arr = torch.stack(resp_r, 1).double().cpu().numpy()
    ratio = g_arr.mean(1) / np.maximum(r_arr.mean(1), 1e-300)
    return {"group": g_arr, "random": r_arr, "ratio": ratio}
