import numpy as np

from ganfit.fitting.colors import fill_unseen_colors
from ganfit.model.topology import harmonic_fill, mirror_vertices


def grid(n=12):
    tri = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j, (i + 1) * n + j + 1
            tri += [[a, b, d], [a, d, c]]
    jj, ii = np.meshgrid(np.arange(n), np.arange(n))
    return np.array(tri), ii.ravel(), jj.ravel()


def test_harmonic_fill_reproduces_linear_function():
    tri, i, j = grid()
    f = np.stack([0.02 * i + 0.03 * j, 0.5 - 0.01 * i, 0.04 * j], -1)
    known = (i == 0) | (i == 11) | (j == 0) | (j == 11)
    noisy = f.copy()
    noisy[~known] = 7.0  # must be ignored
    out = harmonic_fill(noisy, known, tri)
    assert np.allclose(out, f, atol=1e-4)
    assert np.array_equal(out[known], f[known])


def test_mirror_and_fill(tiny_model):
    m = tiny_model
    mirror = mirror_vertices(m.mean)
    assert (mirror >= 0).all()
    assert np.array_equal(mirror[mirror], np.arange(m.num_vertices))  # an involution
    assert np.allclose(m.mean[mirror] * [-1, 1, 1], m.mean, atol=1e-4)
    colors = np.zeros((m.num_vertices, 3))
    colors[:, 0] = 0.8
    visible = m.mean[:, 0] < -5  # only the -x side was seen
    colors[~visible] = 0.0  # garbage where unseen
    out = fill_unseen_colors(colors, visible, m.triangles, mirror)
    assert np.allclose(out[:, 0], 0.8, atol=1e-3) and np.allclose(out[:, 1:], 0.0, atol=1e-3)
    isolated = fill_unseen_colors(colors, np.zeros(m.num_vertices, bool), m.triangles, mirror)
    assert np.allclose(isolated, 0.5)  # nothing seen: neutral grey, not NaN
