"""The handlers of every logger there is: where aca puts its filters and formats."""

from __future__ import annotations

import logging

__all__ = ["all_log_handlers"]


def all_log_handlers() -> list[logging.Handler]:
    """Each handler of the root logger and of every logger made so far, once."""
    loggers = [logging.getLogger(), *logging.root.manager.loggerDict.values()]
    found: dict[int, logging.Handler] = {}
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):  # a PlaceHolder has none
            found.setdefault(id(handler), handler)
    return list(found.values())
