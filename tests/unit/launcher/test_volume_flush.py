"""launcher.volume_flush: the runtime's commit/reload requests reach the node's server, failures come back."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mudpuppy.launcher import volume_flush
from mudpuppy.launcher.volume_flush import ENV_VOLUME_FLUSH, FlushError, FlushServer

pytestmark = pytest.mark.timeout(30)


def test_no_server_configured_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VOLUME_FLUSH, raising=False)
    assert volume_flush.request("commit") is False


def test_requests_are_served_in_order_and_failures_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    server = FlushServer(tmp_path, lambda: calls.append("commit") or None,
                         lambda: calls.append("reload") or "OSError: open files", poll_s=0.01).start()
    monkeypatch.setenv(ENV_VOLUME_FLUSH, str(tmp_path))
    try:
        assert volume_flush.request("commit", timeout_s=10) is True
        with pytest.raises(FlushError, match="volume reload failed: OSError: open files"):
            volume_flush.request("reload", timeout_s=10)
        # from another thread too (each request has its own token)
        done: list[bool] = []
        worker = threading.Thread(target=lambda: done.append(volume_flush.request("commit", timeout_s=10)))
        worker.start()
        worker.join()
        assert done == [True]
    finally:
        server.stop()
    assert calls == ["commit", "reload", "commit"]
    assert server.failures == ["reload: OSError: open files"]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # answers consumed, nothing left behind


def test_a_missing_server_times_out_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VOLUME_FLUSH, str(tmp_path))
    with pytest.raises(FlushError, match="not answered within"):
        volume_flush.request("commit", timeout_s=0.2)
