"""The user-error marker must survive Ray's pickling and wrapping, and come back as the worker's one line."""

from __future__ import annotations

import pickle

import pytest

from mudpuppy.launcher.ray_user_error import MARK, UserErrorExit, is_user_error, user_error_line

pytestmark = pytest.mark.timeout(30)


def test_marker_survives_pickling_and_wrapping() -> None:
    error = pickle.loads(pickle.dumps(UserErrorExit("datasets: path 'x' does not exist")))
    assert str(error) == f"{MARK} datasets: path 'x' does not exist"  # not marked twice after a round trip
    wrapped = RuntimeError(f"Training failed due to worker errors:\nTraceback ...\n  {error}\n")
    assert is_user_error(wrapped) and user_error_line(wrapped) == "datasets: path 'x' does not exist"
    assert not is_user_error(RuntimeError("CUDA out of memory"))
