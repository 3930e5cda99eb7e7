"""One host id, one live daemon per inbox: a second one must refuse and say how to fix it."""

from __future__ import annotations

from pathlib import Path

from tests.daemon.conftest import base_config


def test_second_daemon_with_the_same_host_id_exits_75(tmp_path: Path, daemon_factory) -> None:
    first = daemon_factory(base_config(tmp_path)).start()
    first.wait_ready()
    second_state = dict(base_config(tmp_path), state_dir=str(tmp_path / "state2"))
    second = daemon_factory(second_state).start()
    code = second.wait(60)
    assert code == 75, second.stderr()  # EX_TEMPFAIL: systemd's Restart= may try again later
    busy = second.events("daemon.busy")
    assert busy and "give each daemon its own --host-id" in busy[0]["error"]
    assert first.proc is not None and first.proc.poll() is None, "the first daemon must live on"
    assert first.stop() == 0
