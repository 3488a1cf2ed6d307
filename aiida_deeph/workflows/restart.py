"""Failures in aiida-deeph WorkChains: how they are described, and what a restart WorkChain does with an unknown one."""

from __future__ import annotations

from aiida.engine import ProcessHandlerReport, process_handler


class StopOnUnknownFailure:
    """Mixin before ``BaseRestartWorkChain``: exit code 300 for an unknown failure, rather than a blind rerun."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.exit_code(300, "ERROR_UNRECOVERABLE_FAILURE", message="The calculation failed with an unrecoverable error.")

    @process_handler(priority=0)
    def handle_unknown_failure(self, node):
        """A failure no handler knows: stop, saying which, rather than rerun blindly."""
        if node.is_finished_ok:
            return None
        self.report(f"{node.process_label}<{node.pk}> failed with exit status {node.exit_status} "
                    f"({node.exit_message}), which no handler knows how to fix: stopping")
        return ProcessHandlerReport(do_break=True, exit_code=self.exit_codes.ERROR_UNRECOVERABLE_FAILURE)


def failure_message(node) -> str:
    """``Label<pk> exit status N: message``, for the exit messages of WorkChains that ran ``node``."""
    return f"{node.process_label}<{node.pk}> exit status {node.exit_status}: {node.exit_message or ''}"
