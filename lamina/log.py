"""The short status lines users see ("→ connected lamina: ...", "! ..."), on stderr."""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("lamina")
if not logger.handlers:
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def info(message: str) -> None:
    logger.info(f"→ {message}")


def warning(message: str) -> None:
    logger.warning(f"! {message}")
