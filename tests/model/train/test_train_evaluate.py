"""PSNR / SSIM sanity: identical images give inf / 1, noise lowers both, uint8 and [-1, 1] agree."""

import math

import pytest
import torch

from model.train.evaluate import eval_frames, psnr, ssim


def _image(seed=0, shape=(2, 24, 24, 3)):
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(shape[0] * 3, 1, shape[1] + 4, shape[2] + 4, generator=g), 5,
                                            stride=1)
    return (smooth.view(shape[0], 3, shape[1], shape[2]).permute(0, 2, 3, 1) * 255).round().to(torch.uint8)


def test_identical_images_are_perfect():
    a = _image()
    assert psnr(a, a) == math.inf and ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    f = a.permute(0, 3, 1, 2).float() / 127.5 - 1                            # float (B, 3, H, W)
    assert psnr(f, f) == math.inf and ssim(f, f) == pytest.approx(1.0, abs=1e-12)


def test_noise_lowers_psnr_and_ssim_monotonically():
    a = _image()
    g = torch.Generator().manual_seed(1)
    noisy = [(a.float() + s * torch.randn(a.shape, generator=g)).clamp(0, 255).round().to(torch.uint8)
             for s in (2.0, 8.0, 32.0)]
    p = [psnr(n, a) for n in noisy]
    s = [ssim(n, a) for n in noisy]
    assert p[0] > p[1] > p[2] and s[0] > s[1] > s[2] and s[0] < 1.0
    assert 35 < p[0] < 45                                                     # sigma 2 on range 255: ~42 dB


def test_uint8_and_unit_range_agree():
    a, b = _image(0), _image(1)
    fa, fb = (x.permute(0, 3, 1, 2).double() / 127.5 - 1 for x in (a, b))
    assert psnr(a, b) == pytest.approx(psnr(fa, fb), abs=1e-9)
    assert ssim(a, b) == pytest.approx(ssim(fa, fb), abs=1e-9)
    assert psnr(a, fb.permute(0, 2, 3, 1)) == pytest.approx(psnr(a, b), abs=1e-9)   # mixed: uint8 -> [-1, 1]


def test_shape_mismatch_is_an_error_and_eval_frames():
    with pytest.raises(ValueError, match="same shape"):
        psnr(torch.zeros(2, 3), torch.zeros(3, 2))
    assert [eval_frames(n, 17, 4) for n in (1, 4, 5, 8, 9, 40)] == [1, 1, 5, 5, 9, 17]
