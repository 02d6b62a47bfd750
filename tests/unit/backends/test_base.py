from __future__ import annotations

import pytest

from mudpuppy.backends.base import BACKENDS, Handle, State, backend_class
from mudpuppy.backends.local import map_state as local_state
from mudpuppy.launcher.errors import UserError

pytestmark = pytest.mark.timeout(300)


def test_handle_round_trip() -> None:
    for text in ("slurm://local/123", "ssh://root@h1:22,root@h2/20250101-000000-ab12", "local://box/r"):
        assert str(Handle.parse(text)) == text
    with pytest.raises(ValueError):
        Handle.parse("no-scheme")


def test_terminal_states() -> None:
    assert {s for s in State if s.terminal} == {State.SUCCEEDED, State.FAILED, State.CANCELLED}


def test_local_state_mapping() -> None:
    assert local_state("running") == State.RUNNING
    assert local_state("succeeded") == State.SUCCEEDED
    assert local_state("cancelled") == State.CANCELLED
    assert local_state("bogus") == State.UNKNOWN


def test_registry_loads_every_backend_and_rejects_unknown() -> None:
    for name in BACKENDS:
        cls = backend_class(name)
        assert cls.name == name and cls.capabilities is not None
    with pytest.raises(UserError, match="not available"):
        backend_class("carrier-pigeon")
