"""Shared fixtures: a tiny synthetic face model (always available) and the embedded default model
(available after `ganfit assets fetch`, which `make test` runs; tests needing it skip otherwise)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ganfit.model.morphable import MorphableModel


def make_tiny_model(n_shape: int = 6, n_expr: int = 4, seed: int = 0) -> MorphableModel:
    """A half-ellipsoid 'face' on a 24x24 grid with smooth random bases and 68 landmark vertices."""
    rng = np.random.default_rng(seed)
    n = 24
    u, v = np.meshgrid(np.linspace(-1.2, 1.2, n), np.linspace(-1.0, 1.0, n))
    x, y = 75.0 * np.sin(u), 100.0 * v
    z = 60.0 * np.cos(u) * np.sqrt(np.clip(1.0 - 0.5 * v**2, 0.1, None))
    mean = np.stack([x, y, z], -1).reshape(-1, 3)
    tri = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j, (i + 1) * n + j + 1
            tri += [[a, b, d], [a, d, c]]
    def smooth_basis(k: int) -> np.ndarray:
        freqs = rng.normal(size=(k, 3, 2))
        phases = rng.uniform(0, 2 * np.pi, size=(k, 3))
        b = np.stack([np.sin(freqs[:, c, 0, None] * u.ravel() + freqs[:, c, 1, None] * v.ravel() + phases[:, c, None]) for c in range(3)], 1)
        return np.transpose(b, (2, 1, 0)).astype(np.float32)  # (V, 3, k)
    lms = rng.choice(np.flatnonzero(mean[:, 2] > 20), size=68, replace=False)
    return MorphableModel(
        name="tiny", mean=mean, shape_basis=smooth_basis(n_shape), shape_std=np.linspace(4, 1, n_shape),
        expression_basis=smooth_basis(n_expr), expression_std=np.linspace(2, 0.5, n_expr),
        triangles=np.array(tri), landmark_indices=lms, uv=np.stack([(u.ravel() + 1.2) / 2.4, (v.ravel() + 1) / 2], -1),
        regions={"face": np.ones(n * n, bool)}, meta={"source": "tests"},
    )


@pytest.fixture(scope="session")
def tiny_model() -> MorphableModel:
    return make_tiny_model()


@pytest.fixture(scope="session")
def bfm() -> MorphableModel:
    from ganfit.errors import GanfitError
    from ganfit.model.registry import load_model

    try:
        return load_model("bfm-3ddfa")
    except GanfitError as exc:
        pytest.skip(f"embedded default model not fetched ({exc}); run `ganfit assets fetch`")


@pytest.fixture(scope="module")
def one_thread():
    """Run a test module on one intra-op thread: its tensors are small, so a second thread only adds
    synchronisation, and on a shared, busy 2-core machine it made such tests 10x slower. Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def default_sigint():
    """Python's own Ctrl-C handler for the test (a process started in the background by a non-interactive
    shell, as CI may do, inherits SIGINT ignored, and Python then installs no handler)."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
