"""Follow a running WorkChain from a terminal: its reports as they come, and the training's epoch lines.

``follow(node)`` polls the database (the daemon runs the work), prints every new REPORT of the process tree and,
while a ``deeph.train`` job runs on a computer whose files can be reached, the newest line of its training log, and
returns when the process has terminated. Used by the ``verdi run`` scripts in ``workflows/`` and by
``aiida-deeph watch PK``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from aiida import orm
from aiida.common.exceptions import NotExistent

TRAIN_LOG = "outputs/log"


def _reports(node: orm.ProcessNode) -> list[tuple[int, str]]:
    """(log id, line) of every REPORT of ``node`` and its descendants, oldest first."""
    nodes = [node, *node.called_descendants]
    lines = [(entry.pk, f"{entry.time:%H:%M:%S} {entry.message}")  # the message names pk, process and step
             for proc in nodes for entry in orm.Log.collection.get_logs_for(proc) if entry.levelname == "REPORT"]
    return sorted(lines)


def _training_line(node: orm.ProcessNode) -> str | None:
    """The last line of the log of a running ``deeph.train`` job under ``node``, if its folder can be read."""
    for calc in node.called_descendants:
        if calc.process_type != "aiida.calculations:deeph.train" or calc.is_terminated:
            continue
        if "remote_folder" not in calc.outputs:  # not uploaded yet
            return None
        with tempfile.TemporaryDirectory() as tmp:
            try:
                calc.outputs.remote_folder.getfile(TRAIN_LOG, f"{tmp}/log")
                lines = [line.strip() for line in Path(tmp, "log").read_text().splitlines() if line.strip()]
            except (OSError, NotExistent):  # no epoch logged yet, or the computer cannot be reached
                return None
        return f"[{calc.process_label}<{calc.pk}>] {lines[-1]}" if lines else None
    return None


def follow(node: orm.ProcessNode, interval: float = 10.0, echo: Callable[[str], None] = print) -> orm.ProcessNode:
    """Print ``node``'s progress until it terminates; returns the node, reloaded."""
    seen: set[int] = set()
    last_training = None
    while True:
        for log_id, line in _reports(node):
            if log_id not in seen:
                seen.add(log_id)
                echo(line)
        training = _training_line(node)
        if training and training != last_training:
            echo(training)
            last_training = training
        if node.is_terminated:
            return orm.load_node(node.pk)
        time.sleep(interval)
