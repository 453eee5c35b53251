"""`torch_threads`: run a block of work on a given number of torch intra-op CPU threads."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Within the block torch uses `count` intra-op CPU threads (None: leave its setting alone); the
    previous count is restored on exit, also after an error. torch's setting is process-wide, so Python
    threads that run such blocks at the same time see each other's count."""
    before = torch.get_num_threads()
    if count is None or count == before:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
