"""Flow-matching schedule: exact formulas, the oracle Euler sampler, parity of the shift with diffusers."""

from __future__ import annotations

import pytest
import torch

from model.schedule import (
    FlowSchedule,
    add_noise,
    distilled_sigmas,
    euler_step,
    sample_euler,
    sample_train_sigmas,
    shift_sigma,
    shifted_sigmas,
    sigma_to_timestep,
    velocity_target,
    x0_from_v,
)


def _latents(seed: int, shape=(2, 4, 3, 5, 6)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def test_add_noise_per_sample_and_per_frame():
    x0, noise = _latents(0)
    sigma = torch.tensor([0.25, 0.9])
    out = add_noise(x0, noise, sigma)
    for b in range(2):
        torch.testing.assert_close(out[b], (1 - sigma[b]) * x0[b] + sigma[b] * noise[b], rtol=0, atol=1e-6)
    per_frame = torch.tensor([[0.0, 0.5, 1.0], [1.0, 0.1, 0.3]])     # (B, T): diffusion forcing
    out = add_noise(x0, noise, per_frame)
    for b in range(2):
        for t in range(3):
            s = per_frame[b, t]
            torch.testing.assert_close(out[b, :, t], (1 - s) * x0[b, :, t] + s * noise[b, :, t], rtol=0, atol=1e-6)
    assert torch.equal(out[0, :, 0], x0[0, :, 0])          # sigma 0 is the clean frame
    assert torch.equal(out[1, :, 0], noise[1, :, 0])       # sigma 1 is pure noise
    torch.testing.assert_close(add_noise(x0, noise, 0.5), 0.5 * (x0 + noise))


def test_bad_sigma_shape_raises():
    x0, noise = _latents(0)
    with pytest.raises(ValueError, match=r"\(B,\) or \(B, T\)"):
        add_noise(x0, noise, torch.ones(3))
    with pytest.raises(ValueError, match="same shape"):
        add_noise(x0, noise[:1], 0.5)


def test_velocity_x0_and_euler_formulas():
    x0, noise = _latents(1)
    v = velocity_target(x0, noise)
    torch.testing.assert_close(v, noise - x0)
    sigma = torch.tensor([0.3, 0.8])
    x_s = add_noise(x0, noise, sigma)
    torch.testing.assert_close(x0_from_v(x_s, v, sigma), x0, rtol=0, atol=1e-5)
    torch.testing.assert_close(euler_step(x_s, v, sigma, torch.tensor([0.1, 0.2])),
                               add_noise(x0, noise, torch.tensor([0.1, 0.2])), rtol=0, atol=1e-5)
    torch.testing.assert_close(euler_step(x_s, v, 0.5, 0.25), x_s - 0.25 * v)


def test_timestep_and_shift_formulas():
    s = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])
    torch.testing.assert_close(sigma_to_timestep(s), 1000 * s)
    for shift in (1.0, 3.0, 9.95):
        torch.testing.assert_close(shift_sigma(s, shift), shift * s / (1 + (shift - 1) * s))
    torch.testing.assert_close(shift_sigma(s, 1.0), s)
    assert shift_sigma(0.5, 3.0).item() == pytest.approx(0.75)


def test_distilled_sigmas_and_schedule():
    torch.testing.assert_close(distilled_sigmas(), torch.tensor([1.0, 0.96, 0.889, 0.727, 0.0]))
    sched = FlowSchedule()
    torch.testing.assert_close(sched.sigmas(), torch.tensor([1.0, 0.96, 0.889, 0.727, 0.0]))
    torch.testing.assert_close(FlowSchedule(distilled_timesteps=(1000, 967, 908, 764, 0)).sigmas(),
                               torch.tensor([1.0, 0.967, 0.908, 0.764, 0.0]))
    for bad in [(1000, 960, 960, 0), (1000, 500), (0,), (1200, 0)]:
        with pytest.raises(ValueError, match="fall strictly"):
            distilled_sigmas(bad)
    with pytest.raises(ValueError, match="train_sampling"):
        FlowSchedule(train_sampling="cosine")


@pytest.mark.parametrize("sigmas", [[1.0, 0.0], [1.0, 0.96, 0.889, 0.727, 0.0]], ids=["1-step", "4-step"])
def test_euler_with_oracle_velocity_recovers_x0(sigmas):
    x0, noise = _latents(2)
    calls = []

    def oracle(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        calls.append(sigma.clone())
        assert sigma.shape == (x.shape[0],)
        torch.testing.assert_close(x, add_noise(x0, noise, sigma), rtol=0, atol=1e-5)   # stays on the path
        return noise - x0

    out = sample_euler(oracle, noise, sigmas)
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-5)
    assert len(calls) == len(sigmas) - 1
    assert [c[0].item() for c in calls] == pytest.approx(sigmas[:-1])


def test_euler_with_a_wrong_velocity_does_not_recover_x0():
    x0, noise = _latents(3)
    out = sample_euler(lambda x, s: noise - 0.5 * x0, noise, [1.0, 0.5, 0.0])
    assert (out - x0).abs().max() > 0.1


def test_shift_matches_diffusers_scheduler():
    diffusers = pytest.importorskip("diffusers", reason="diffusers (dev extra) is needed for the parity check")
    for shift in (1.0, 3.0, 9.95):
        sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
        # Init-time table: sigmas t / 1000 for t = 1000 .. 1, shifted.
        base = torch.arange(1000, 0, -1, dtype=torch.float32) / 1000
        torch.testing.assert_close(shift_sigma(base, shift), sched.sigmas, rtol=1e-6, atol=1e-6)
        # Explicit sigmas through set_timesteps: shifted, then a final 0 appended.
        ours = shifted_sigmas(8, shift)
        sched.set_timesteps(sigmas=torch.linspace(1, 0, 9)[:-1].tolist())
        torch.testing.assert_close(ours, sched.sigmas, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(sigma_to_timestep(ours[:-1]), sched.timesteps, rtol=1e-6, atol=1e-3)


def test_euler_step_matches_diffusers_step():
    diffusers = pytest.importorskip("diffusers", reason="diffusers (dev extra) is needed for the parity check")
    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(sigmas=[1.0, 0.75, 0.5, 0.25])
    x0, noise = _latents(4)
    x_ours = x_theirs = noise
    for i, t in enumerate(sched.timesteps):
        v = noise - 0.7 * x0 + 0.01 * i
        x_ours = euler_step(x_ours, v, sched.sigmas[i], sched.sigmas[i + 1])
        x_theirs = sched.step(v, t, x_theirs, return_dict=False)[0]
    torch.testing.assert_close(x_ours, x_theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["logit_normal", "uniform"])
def test_train_sigmas_open_interval_and_seeded(kind):
    a = sample_train_sigmas(20000, torch.Generator().manual_seed(7), kind=kind)
    b = sample_train_sigmas(20000, torch.Generator().manual_seed(7), kind=kind)
    c = sample_train_sigmas(20000, torch.Generator().manual_seed(8), kind=kind)
    assert a.shape == (20000,) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert bool((a > 0).all()) and bool((a < 1).all())
    assert abs(a.mean().item() - 0.5) < 0.01                 # both are symmetric about 1/2 before the shift
    if kind == "logit_normal":                              # mass concentrates in the middle
        assert ((a > 0.25) & (a < 0.75)).float().mean().item() > 0.6
    shifted = sample_train_sigmas(20000, torch.Generator().manual_seed(7), kind=kind, shift=3.0)
    torch.testing.assert_close(shifted, shift_sigma(a, 3.0))
    assert shifted.mean() > a.mean()


def test_schedule_train_sigmas_use_its_settings():
    sched = FlowSchedule(shift=4.0, logit_mean=0.5, logit_std=0.8)
    got = sched.sample_train_sigmas(64, torch.Generator().manual_seed(1))
    want = sample_train_sigmas(64, torch.Generator().manual_seed(1), shift=4.0, logit_mean=0.5, logit_std=0.8)
    assert torch.equal(got, want)
