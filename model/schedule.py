"""Flow-matching noise schedule, timesteps and the few-step Euler sampler (SANA-WM, rectified flow).

What is notable, and why:
- One convention everywhere (SANA-WM / diffusers): x_sigma = (1 - sigma) x0 + sigma noise, the model predicts the
  velocity v = noise - x0, an Euler step is x' = x + (sigma' - sigma) v, and timestep = 1000 sigma.
- `shift` is diffusers' `FlowMatchEulerDiscreteScheduler` shift, sigma' = s sigma / (1 + (s - 1) sigma). It acts on
  training sigmas and on `shifted_sigmas`; the distilled timesteps are explicit sigmas used unshifted (shift 1.0),
  as in the released streaming sampler.
- Sigmas broadcast per sample (B,) or per frame (B, T) against latents (B, C, T, h, w), so diffusion forcing
  (a different noise level per frame, frame 0 clean) uses the same helpers.
- Pure functions of tensors: the streaming generator composes the pieces inside its CUDA graph; `sample_euler` is a
  plain loop for tests and offline generation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FlowSchedule:
    """Schedule settings for training and few-step sampling."""

    shift: float = 1.0                                                  # training / teacher shift (1.0 = none)
    distilled_timesteps: tuple[int, ...] = (1000, 960, 889, 727, 0)     # streaming release; the last step goes to 0
    num_train_timesteps: int = 1000
    train_sampling: str = "logit_normal"                                # or "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0

    def __post_init__(self) -> None:
        if self.shift <= 0:
            raise ValueError(f"shift must be > 0, got {self.shift}")
        if self.train_sampling not in ("logit_normal", "uniform"):
            raise ValueError(f"train_sampling must be 'logit_normal' or 'uniform', got {self.train_sampling!r}")
        distilled_sigmas(self.distilled_timesteps, self.num_train_timesteps)   # validates the list

    def sigmas(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The distilled sampling sigmas (S + 1,), from 1 down to 0."""
        return distilled_sigmas(self.distilled_timesteps, self.num_train_timesteps, device=device)

    def sample_train_sigmas(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n,) training sigmas with this schedule's distribution and shift."""
        return sample_train_sigmas(n, generator, kind=self.train_sampling, shift=self.shift,
                                   logit_mean=self.logit_mean, logit_std=self.logit_std)


def _broadcast_sigma(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Sigma as a scalar, (B,) per sample or (B, T) per frame -> broadcastable against x (B, C, T, ...)."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.dim() == 0:
        return sigma
    if sigma.dim() == 1 and sigma.shape[0] == x.shape[0]:
        return sigma.view(-1, *([1] * (x.dim() - 1)))                      # (B, 1, 1, ...)
    if sigma.dim() == 2 and x.dim() >= 3 and sigma.shape == (x.shape[0], x.shape[2]):
        return sigma.view(sigma.shape[0], 1, sigma.shape[1], *([1] * (x.dim() - 3)))   # (B, 1, T, 1, 1)
    raise ValueError(f"sigma must be a scalar, (B,) or (B, T) for x of shape {tuple(x.shape)} (B, C, T, ...); "
                     f"got shape {tuple(sigma.shape)}")


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """x_sigma = (1 - sigma) x0 + sigma noise."""
    if x0.shape != noise.shape:
        raise ValueError(f"x0 and noise must have the same shape, got {tuple(x0.shape)} and {tuple(noise.shape)}")
    s = _broadcast_sigma(sigma, x0)
    return (1 - s) * x0 + s * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The flow-matching regression target v = noise - x0 (d x_sigma / d sigma)."""
    return noise - x0


def sigma_to_timestep(sigma: torch.Tensor | float, num_train_timesteps: int = 1000) -> torch.Tensor:
    """The model's timestep input: num_train_timesteps * sigma."""
    return torch.as_tensor(sigma) * num_train_timesteps


def shift_sigma(sigma: torch.Tensor | float, shift: float) -> torch.Tensor:
    """Timestep shift s sigma / (1 + (s - 1) sigma): s > 1 spends more steps at high noise. Keeps 0 and 1 fixed."""
    sigma = torch.as_tensor(sigma)
    return shift * sigma / (1 + (shift - 1) * sigma)


def euler_step(x: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor | float,
               sigma_next: torch.Tensor | float) -> torch.Tensor:
    """One Euler step of the flow ODE from sigma to sigma_next: x + (sigma_next - sigma) v."""
    return x + (_broadcast_sigma(sigma_next, x) - _broadcast_sigma(sigma, x)) * v


def x0_from_v(x_sigma: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """The clean estimate implied by a velocity: x0 = x_sigma - sigma v (an Euler step straight to 0)."""
    return x_sigma - _broadcast_sigma(sigma, x_sigma) * v


def distilled_sigmas(timesteps: Sequence[int | float] = (1000, 960, 889, 727, 0), num_train_timesteps: int = 1000,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """Explicit timesteps -> sigmas t / num_train_timesteps, float32 (S + 1,). Must fall strictly and end at 0."""
    t = torch.as_tensor(list(timesteps), dtype=torch.float64)
    if t.dim() != 1 or t.numel() < 2 or bool((t[1:] >= t[:-1]).any()) or t[-1] != 0 or t[0] > num_train_timesteps:
        raise ValueError(f"timesteps must fall strictly from <= {num_train_timesteps} to 0 (at least two), "
                         f"got {list(timesteps)}")
    return (t / num_train_timesteps).to(dtype=torch.float32, device=device)


def shifted_sigmas(num_steps: int, shift: float = 1.0, device: torch.device | str | None = None) -> torch.Tensor:
    """(num_steps + 1,) sigmas, evenly spaced from 1 to 0 then shifted: a many-step (teacher) schedule.

    diffusers' `set_timesteps(num_steps)` differs slightly: its grid stops at the shifted sigma of 1/1000 before the
    appended 0, and it shifts that end point twice. Pass this list as explicit sigmas for an exact match.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    sigmas = shift_sigma(torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64), shift)
    return sigmas.to(dtype=torch.float32, device=device)


def sample_train_sigmas(n: int, generator: torch.Generator | None = None, kind: str = "logit_normal",
                        shift: float = 1.0, logit_mean: float = 0.0, logit_std: float = 1.0,
                        device: torch.device | str | None = None) -> torch.Tensor:
    """(n,) float32 training sigmas in the open interval (0, 1), then shifted.

    "logit_normal": sigmoid(N(logit_mean, logit_std)) (SD3 / SANA). "uniform": U(0, 1). Samples are clamped to
    [1e-6, 1 - 1e-6] before the shift. Deterministic for a seeded `generator`; drawn on the generator's device.
    """
    if device is None:
        device = generator.device if generator is not None else "cpu"
    if kind == "logit_normal":
        u = torch.randn(n, generator=generator, device=device) * logit_std + logit_mean
        sigma = torch.sigmoid(u)
    elif kind == "uniform":
        sigma = torch.rand(n, generator=generator, device=device)
    else:
        raise ValueError(f"kind must be 'logit_normal' or 'uniform', got {kind!r}")
    return shift_sigma(sigma.clamp(1e-6, 1 - 1e-6), shift).to(torch.float32)


def sample_euler(model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor,
                 sigmas: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """Integrate the flow ODE from `noise` (at sigmas[0]) along `sigmas` with Euler steps; returns x at sigmas[-1].

    model_fn(x, sigma) -> v, with sigma a (B,) tensor; convert with `sigma_to_timestep` inside if the model wants
    timesteps. A plain loop for tests and offline generation.
    """
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32)
    if sigmas.dim() != 1 or sigmas.numel() < 2:
        raise ValueError(f"sigmas must be 1-D with at least two entries, got shape {tuple(sigmas.shape)}")
    x = noise
    for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        sigma = torch.full((x.shape[0],), s, dtype=x.dtype, device=x.device)
        x = euler_step(x, model_fn(x, sigma), s, s_next)
    return x
