"""kvrt's logger: structlog events, delivered to the standard library's ``kvrt`` logger.

Your structlog configuration (processors, renderer) applies to kvrt's events, and they end at the
``logging`` logger named ``kvrt``, so a library stays quiet until the application says what it
wants to see: warnings and errors (a crash, a give-up) reach stderr by default, lifecycle events
at INFO once the application enables them (``logging.basicConfig(level=logging.INFO)``). Events
name workers, backends and causes; never values or credentials.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

logger: Any = structlog.wrap_logger(logging.getLogger("kvrt"))
"""The logger every kvrt module binds from."""
