"""dfmvr.involution: the unfold implementation against a direct loop over pixels, kernel taps and channels
(written here from the definition in Li et al., CVPR 2021), the layer's output size, and gradcheck."""
from __future__ import annotations

import pytest
import torch

from dfmvr.involution import Involution2d, involution2d


def loop_involution(x, kernel, k, stride=1, dilation=1):
    b, c, h, w = x.shape
    g = kernel.shape[1]
    pad = dilation * (k - 1) // 2
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    ho, wo = kernel.shape[3], kernel.shape[4]
    out = torch.zeros(b, c, ho, wo, dtype=x.dtype)
    for bi in range(b):
        for ci in range(c):
            gi = ci // (c // g)
            for i in range(ho):
                for j in range(wo):
                    acc = 0.0
                    for u in range(k):
                        for v in range(k):
                            acc = acc + kernel[bi, gi, u * k + v, i, j] * xp[bi, ci, i * stride + u * dilation, j * stride + v * dilation]
                    out[bi, ci, i, j] = acc
    return out


@pytest.mark.parametrize("k,stride,groups,dilation,size", [(3, 1, 1, 1, (5, 6)), (3, 2, 2, 1, (7, 6)), (5, 1, 4, 1, (4, 5)), (3, 1, 2, 2, (6, 6))])
def test_matches_direct_loop(k, stride, groups, dilation, size):
    g = torch.Generator().manual_seed(k * 10 + stride + groups)
    x = torch.randn(2, 4, *size, generator=g, dtype=torch.float64)
    ho, wo = (size[0] - 1) // stride + 1, (size[1] - 1) // stride + 1
    kernel = torch.randn(2, groups, k * k, ho, wo, generator=g, dtype=torch.float64)
    fast = involution2d(x, kernel, k, stride=stride, dilation=dilation)
    assert fast.shape == (2, 4, ho, wo)
    torch.testing.assert_close(fast, loop_involution(x, kernel, k, stride, dilation), rtol=1e-12, atol=1e-12)


def test_layer_uses_its_generated_kernel_and_output_size():
    torch.manual_seed(0)
    layer = Involution2d(8, 3, stride=2, groups=2).double().eval()
    x = torch.randn(2, 8, 9, 10, dtype=torch.float64)
    kernel = layer.kernel(x)
    assert kernel.shape == (2, 2, 9, 5, 5)
    y = layer(x)
    torch.testing.assert_close(y, loop_involution(x, kernel, 3, 2))
    # spatial-specific: the kernel differs between pixels, unlike a convolution's
    assert (kernel[:, :, :, 0, 0] - kernel[:, :, :, 2, 3]).abs().max() > 1e-3


def test_gradcheck():
    torch.manual_seed(1)
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    kernel = torch.randn(1, 2, 9, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, w: involution2d(a, w, 3, stride=2), (x, kernel))
    layer = Involution2d(4, 3, groups=2).double().eval()  # eval: BatchNorm uses its running statistics
    assert torch.autograd.gradcheck(layer, (torch.randn(1, 4, 4, 4, dtype=torch.float64, requires_grad=True),))


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="G must divide C"):
        involution2d(torch.zeros(1, 5, 4, 4), torch.zeros(1, 2, 9, 4, 4), 3)
    with pytest.raises(ValueError, match="odd"):
        involution2d(torch.zeros(1, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4), 2)
    with pytest.raises(ValueError, match="must divide"):
        Involution2d(6, groups=4)
