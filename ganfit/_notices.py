"""Notices of slow one-off steps (a face model's triangulation built on first use, ...).

They are INFO records of the `NOTICES` logger ("ganfit.progress"): library code logs one where the slow
work starts (`notice`); the command line prints them on stderr as ``ganfit: <message>`` unless -q, and a
program sees them by enabling INFO logging (``logging.basicConfig(level=logging.INFO)``)."""
from __future__ import annotations

import logging

NOTICES = "ganfit.progress"


def notice(message: str, *args: object) -> None:
    """Log a notice that a slow step starts (%-style `args`, as `logging`)."""
    logging.getLogger(NOTICES).info(message, *args)
