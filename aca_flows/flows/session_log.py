"""The session's own log, and ``[logging] level`` applied to a run's logs.

While a flow run drives its session, the Prefect run loggers (the flow's and its task runs')
and aca's own loggers drop records below ``[logging] level`` — in the terminal and in the
Prefect UI alike — and what remains of this flow run's records is appended, redacted, to
``execution_logs/system_logs/session.log``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from aca_flows.flows.log_batch import print_each_line
from aca_flows.session.redact import RedactingFilter

__all__ = ["session_log"]

RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "aca_flows")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _ThisFlowRun(logging.Filter):
    """Records of this flow run and its task runs, and aca's own; not other flow runs'."""

    def __init__(self, flow_run_id: str | None):
        super().__init__()
        self.flow_run_id = flow_run_id

    def filter(self, record: logging.LogRecord) -> bool:
        other = getattr(record, "flow_run_id", None)
        return other is None or self.flow_run_id is None or str(other) == self.flow_run_id


@contextlib.contextmanager
def session_log(path: Path, level: str, flow_run_id: str | None) -> Iterator[None]:
    """Within the block, run logs below ``level`` are dropped and the rest also go to ``path``;
    the loggers' levels are restored after."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(FORMAT))
    print_each_line(handler)
    handler.addFilter(_ThisFlowRun(flow_run_id))
    handler.addFilter(RedactingFilter())
    loggers = [logging.getLogger(name) for name in RUN_LOGGERS]
    previous = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger, old_level in zip(loggers, previous, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(old_level)
        handler.close()
