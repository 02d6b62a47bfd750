"""Stop a Ray Train run on a user error instead of retrying it ``max_failures`` times.

Why: Ray Train V2 retries every ``WorkerGroupError`` (``FailureConfig.max_failures``), but a bad config or bad
data (the runtime's exit 2) fails the same way on every attempt, each one paying for a new worker group. A worker
that hits a user error raises ``UserErrorExit`` (its message carries ``MARK``). When the controller moves to
``RestartingState``/``ReschedulingState`` because of such a failure, ``stop_on_user_error()``'s controller
callback raises; Ray wraps that in
a ``ControllerError`` whose cause is not one of its retryable start-up errors, so the failure policy raises
instead of restarting. The driver then sees a ``ControllerError`` (or, with ``max_failures: 0``, the
``WorkerGroupError`` itself) and ``is_user_error`` tells it to exit 2 with the worker's one-line message.

This module imports Ray only inside functions: the launcher stays importable without it.
"""

from __future__ import annotations

from typing import Any

MARK = "[mudpuppy:user-error]"


class UserErrorExit(RuntimeError):
    """Raised in a Train worker for a user error; ``str()`` is ``MARK`` and the one-line message."""

    def __init__(self, line: str) -> None:
        super().__init__(f"{MARK} {line}")
        self.line = line

    def __reduce__(self) -> tuple[Any, ...]:  # crosses process boundaries: rebuild from the line, not str()
        return (type(self), (self.line,))


def is_user_error(error: BaseException) -> bool:
    return MARK in str(error)


def user_error_line(error: BaseException) -> str:
    """The worker's one-line message out of Ray's wrapped error text."""
    for line in str(error).splitlines():
        if MARK in line:
            return line.split(MARK, 1)[1].strip()
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def stop_on_user_error() -> Any:
    """A Ray Train ``ControllerCallback`` (passed in ``RunConfig(callbacks=...)``) that vetoes restarts."""
    from ray.train.v2._internal.execution.callback import ControllerCallback
    from ray.train.v2._internal.execution.controller.state import ReschedulingState, RestartingState
    from ray.train.v2.api.exceptions import WorkerGroupError

    class StopOnUserError(ControllerCallback):
        def after_controller_state_update(self, previous_state: Any, current_state: Any) -> None:
            error = getattr(current_state, "training_failed_error", None)
            # Rescheduling when the group failed before it ran, Restarting when it failed while running.
            if isinstance(current_state, (ReschedulingState, RestartingState)) and isinstance(
                    error, WorkerGroupError):
                failures = [f for f in error.worker_failures.values() if is_user_error(f)]
                if failures:
                    raise UserErrorExit(user_error_line(failures[0]))

    return StopOnUserError()
