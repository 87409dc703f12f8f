"""The exploration noise of RL chunks: iid per step (the paper), correlated along the chunk, or on
a few waypoints per chunk.

A sampled chunk is ``mean + std * n`` per action dimension (``std = exp(log_std) * delta_std``),
with n, per joint over the H steps of a chunk, zero-mean Gaussian of covariance

    K = (1 - rho) I + rho b b^T

b is the chunk's noise shape: ``constant`` (b_t = 1: one offset for the whole chunk) or ``ramp``
(b_t = (t + 1) / H: a deviation that grows along the chunk, so the first target stays on the mean
and the trajectory bends smoothly). rho = 0 is the paper's iid noise. With rho > 0 one draw per
chunk and joint moves every executed action together, as gSDE (Raffin et al., 2022) and coloured
noise do for robot arms: iid noise on 32 targets a chunk is mostly smoothed away by the trajectory
controller, and its log-probability gradient spreads an outcome's credit over 32 x 7 independent
directions.

The log-density and the KL are exact over any executed window (a mask of steps), by the
Sherman-Morrison formula for the masked K: for the n executed steps, with m = b masked,

    r^T K^-1 r = (|r|^2 - rho (m.r)^2 / (1 - rho + rho |m|^2)) / (1 - rho)
    log det K  = n log(1 - rho) + log(1 + rho |m|^2 / (1 - rho))

With ``waypoints: k`` the noise has no per-step part at all: per joint, k iid draws z perturb k
waypoints spread evenly over the chunk (the last on its last step), and every step's offset is
their linear interpolation, starting from 0 just before the first step: n = B z with B the (H, k)
hat-function basis. A chunk then carries k x A random numbers instead of H x A, so the score
function's noise has that many dimensions (Stage 1 on an H = 32 arm: 7 x k instead of 224). The
density is that of the latent: over an executed prefix of n steps, with B_n its first n rows of
rank r, z_hat = pinv(B_n) residual and log p = -|z_hat|^2 / 2 - r (log std + log(2 pi) / 2) per
action dimension (the residual's part off B_n's span is not scored: the policy explores, and so
learns, only along the waypoints). k = H is B = I, the paper's iid noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

NOISE_SHAPES = ('ramp', 'constant')


@dataclass(frozen=True)
class ExplorationConfig:
    """The sampling distribution of rollout chunks around the policy's mean.

    correlation: rho, the share of each action's noise variance that one draw per chunk and joint
        carries along the chunk's shape; 0 (default, the paper) = iid per step. Must be < 1.
    shape: 'ramp' (the shared draw grows linearly from 1 / H at the first step to 1 at the last) or
        'constant' (the same offset on every step).
    waypoints: k > 0 draws the noise on k waypoints per chunk and joint only, linearly
        interpolated between them (from 0 before the first step); 0 (default) = per step as above.
        Excludes correlation.
    """

    correlation: float = 0.0
    shape: str = 'ramp'
    waypoints: int = 0

    def __post_init__(self):
        if not 0.0 <= self.correlation < 1.0:
            raise ValueError(f'exploration.correlation ({self.correlation}) must be in [0, 1): 1 would leave a '
                             'chunk no per-step noise and its density singular')
        if self.shape not in NOISE_SHAPES:
            raise ValueError(f'exploration.shape ({self.shape!r}) must be one of {list(NOISE_SHAPES)}')
        if self.waypoints < 0:
            raise ValueError(f'exploration.waypoints ({self.waypoints}) must be >= 0 (0 = noise on every step)')
        if self.waypoints and self.correlation:
            raise ValueError(f'exploration.waypoints ({self.waypoints}) and exploration.correlation '
                             f'({self.correlation}) exclude each other: set one of them')


def waypoint_basis(chunk_size: int, waypoints: int, dtype=torch.float64) -> torch.Tensor:
    """(H, k) B: column i is the hat function of waypoint i (at step round((i + 1) H / k) - 1),
    linear from the previous waypoint (or from 0 at step -1) to the next; k = H gives I."""
    if not 0 < waypoints <= chunk_size:
        raise ValueError(f'exploration.waypoints ({waypoints}) must be in [1, chunk_size = {chunk_size}]')
    knots = [-1.0] + [round((i + 1) * chunk_size / waypoints) - 1.0 for i in range(waypoints)]
    t = torch.arange(chunk_size, dtype=dtype)
    basis = torch.zeros(chunk_size, waypoints, dtype=dtype)
    for i in range(waypoints):
        left, knot = knots[i], knots[i + 1]
        rising = (t - left) / (knot - left)
        basis[:, i] = torch.where((t > left) & (t <= knot), rising, basis[:, i])
        if i + 1 < waypoints:
            right = knots[i + 2]
            falling = (right - t) / (right - knot)
            basis[:, i] = torch.where((t > knot) & (t < right), falling, basis[:, i])
    return basis


class ChunkNoise:
    """Sample, score and compare chunks under ``ExplorationConfig`` for a ``VLAModel``.

    All densities are in the model's normalized delta space (as ``VLAModel.gaussian_log_prob``,
    which this equals at correlation 0), summed over the masked steps and every action dimension.
    """

    def __init__(self, config: ExplorationConfig = ExplorationConfig()):
        self.config = config
        self._projections: dict[tuple[int, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def _waypoint_projection(self, chunk_size: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """For every executed prefix n = 0..H: (H + 1, k, H) pinv(B_n) zero-padded to H columns,
        and (H + 1,) the rank of B_n."""
        key = (chunk_size, dtype)
        if key not in self._projections:
            basis = waypoint_basis(chunk_size, self.config.waypoints)
            k = basis.shape[1]
            pinv = torch.zeros(chunk_size + 1, k, chunk_size, dtype=torch.float64)
            rank = torch.zeros(chunk_size + 1, dtype=torch.float64)
            for n in range(1, chunk_size + 1):
                pinv[n, :, :n] = torch.linalg.pinv(basis[:n])
                rank[n] = torch.linalg.matrix_rank(basis[:n])
            self._projections[key] = (pinv.to(dtype), rank.to(dtype))
        return self._projections[key]

    def dims(self, mask: torch.Tensor) -> torch.Tensor:
        """(B,) random numbers per action dimension behind each window's masked steps (B, H): the
        steps themselves, or with waypoints the rank of their basis rows."""
        n = mask.sum(-1)
        if not self.config.waypoints:
            return n.to(torch.float32)
        return self._waypoint_projection(mask.shape[-1], torch.float32)[1][n]

    def shape(self, chunk_size: int, dtype=torch.float32) -> torch.Tensor:
        """(H,) b, the per-step weight of the chunk's shared draw."""
        if self.config.shape == 'constant':
            return torch.ones(chunk_size, dtype=dtype)
        return torch.arange(1, chunk_size + 1, dtype=dtype) / chunk_size

    def sample(self, model, mean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, H, A) chunk drawn around ``mean`` (raw units). At correlation 0 this draws exactly
        what ``VLAModel.sample`` does from the same generator."""
        rho = self.config.correlation
        if self.config.waypoints:
            basis = waypoint_basis(mean.shape[1], self.config.waypoints, mean.dtype).to(mean.device)
            draws = torch.randn((mean.shape[0], basis.shape[1], mean.shape[2]), generator=generator,
                                device=mean.device, dtype=mean.dtype)
            return mean + torch.einsum('hk,bka->bha', basis, draws) * model.log_std().exp() * model.delta_std
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        if rho > 0:
            shared = torch.randn((mean.shape[0], 1, mean.shape[2]), generator=generator, device=mean.device,
                                 dtype=mean.dtype)
            b = self.shape(mean.shape[1], mean.dtype).to(mean.device)[None, :, None]
            noise = math.sqrt(1.0 - rho) * noise + math.sqrt(rho) * b * shared
        return mean + noise * model.log_std().exp() * model.delta_std

    def _quadratic(self, residual: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per window and dimension (B, A): r^T K^-1 r over the masked steps of ``residual`` (B, H, A),
        and log det K of those steps (with waypoints: |pinv(B_n) r|^2 and 0)."""
        rho = self.config.correlation
        if self.config.waypoints:
            n = mask.sum(-1)
            if not torch.equal(mask, torch.arange(mask.shape[-1], device=mask.device)[None] < n[:, None]):
                raise ValueError('waypoint noise is scored over executed prefixes only: every mask row must '
                                 'be True on its first n steps and False after')
            pinv = self._waypoint_projection(residual.shape[1], residual.dtype)[0].to(residual.device)[n]
            quad = torch.einsum('bkh,bha->bka', pinv, residual).square().sum(1)
            return quad, torch.zeros_like(quad)
        m = mask.to(residual.dtype)                                  # (B, H)
        n = m.sum(-1, keepdim=True)                                  # (B, 1)
        squares = (residual.square() * m[..., None]).sum(1)          # (B, A)
        if rho == 0:
            return squares, torch.zeros_like(squares)
        b = self.shape(residual.shape[1], residual.dtype).to(residual.device) * m   # (B, H) masked shape
        bb = b.square().sum(-1, keepdim=True)                        # (B, 1)
        br = (b[..., None] * residual).sum(1)                        # (B, A)
        quad = (squares - rho * br.square() / (1.0 - rho + rho * bb)) / (1.0 - rho)
        log_det = n * math.log(1.0 - rho) + torch.log1p(rho * bb / (1.0 - rho))
        return quad, log_det.expand_as(quad)

    def log_prob(self, model, mean: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """(B,) log-density of ``actions`` (B, H, A) drawn around ``mean``, over ``mask`` (B, H)."""
        if mask is None:
            mask = torch.ones(mean.shape[:2], dtype=torch.bool, device=mean.device)
        log_std = model.log_std()
        residual = model.normalized_error(mean, actions) / log_std.exp()
        quad, log_det = self._quadratic(residual, mask)
        n = self.dims(mask).to(residual.dtype)[:, None]
        per_dim = -0.5 * quad - 0.5 * log_det - n * (log_std + 0.5 * math.log(2 * math.pi))
        return per_dim.sum(-1)

    def kl(self, model, mean: torch.Tensor, reference, ref_mean: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B,) KL(policy || reference) of each chunk over the masked steps, both drawn with this noise
        (the same K, per-dimension stds of their own): per dimension with n steps (with waypoints: n
        the rank of the steps' basis rows),
        n (log s_ref - log s) + n s^2 / (2 s_ref^2) - n / 2 + gap^T K^-1 gap / (2 s_ref^2)."""
        log_std, ref_log_std = model.log_std(), reference.log_std().detach()
        gap = model.normalized_error(mean, ref_mean.detach()) / ref_log_std.exp()
        quad, _ = self._quadratic(gap, mask)
        n = self.dims(mask).to(gap.dtype)[:, None]
        per_dim = n * (ref_log_std - log_std + 0.5 * (2 * (log_std - ref_log_std)).exp() - 0.5) + 0.5 * quad
        return per_dim.sum(-1)
