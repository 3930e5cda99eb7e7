"""The service log: JSON lines, stdlib records (watchdog's) in the same shape, job capture."""

from __future__ import annotations

import io
import json
import logging

from smaskd import log as logsetup


def test_json_lines_and_stdlib_records_share_one_pipeline() -> None:
    stream = io.StringIO()
    logsetup.configure("info", stream=stream, json_lines=True)
    log = logsetup.get_logger("smaskd.daemon")
    log.info("job.done", job_id="j1", items=3)
    log.debug("job.claimed", job_id="j1")  # below the service level: not printed
    logging.getLogger("watchdog.observers.inotify_c").warning(
        "Inotify queue overflowed; filesystem events were lost")
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert [x["event"] for x in lines] == [
        "job.done", "Inotify queue overflowed; filesystem events were lost"]
    for line in lines:
        assert {"timestamp", "level", "event", "logger"} <= set(line)
    assert lines[1]["logger"] == "watchdog.observers.inotify_c" and lines[1]["level"] == "warning"


def test_job_events_are_collected_including_debug() -> None:
    stream = io.StringIO()
    logsetup.configure("info", stream=stream, json_lines=True)
    log = logsetup.get_logger("smaskd.daemon")
    logsetup.JOB_LOGS.open("j2")
    bound = log.bind(job_id="j2", input="a.json")
    bound.debug("job.claimed")
    bound.info("job.started", attempt=1)
    log.info("other", job_id="j3")
    events = logsetup.JOB_LOGS.close("j2")
    assert [e["event"] for e in events] == ["job.claimed", "job.started"]
    assert all(e["job_id"] == "j2" and e["input"] == "a.json" for e in events)
    assert events[0]["level"] == "debug"


def test_debug_daemon_prints_its_own_events_not_watchdogs(tmp_path, daemon_factory) -> None:
    """``log_level: debug`` (the fixtures' default) is for smaskd's decisions: watchdog's
    debug line per inotify event (heartbeats included) stays out unless asked for."""
    from tests.daemon.conftest import base_config, coco_bytes, files

    (tmp_path / "inbox").mkdir()
    d = daemon_factory(base_config(tmp_path)).start()
    d.wait_ready()
    (tmp_path / "inbox" / "a.json").write_bytes(coco_bytes())
    d.wait_for(lambda: "a.zip" in files(tmp_path / "outbox"), what="a.zip")
    assert d.stop() == 0
    assert d.events("inbox.scan"), "smaskd's own debug events still print"
    assert [e for e in d.events() if e.get("logger", "").startswith("watchdog")] == []


def test_library_log_level_debug_lets_watchdog_debug_through() -> None:
    stream = io.StringIO()
    logsetup.configure("debug", stream=stream, json_lines=True, libraries="debug")
    logging.getLogger("watchdog.observers.inotify_buffer").debug("in-event %s", "x")
    logsetup.configure("debug", stream=stream, json_lines=True)
    logging.getLogger("watchdog.observers.inotify_buffer").debug("in-event %s", "y")
    events = [json.loads(x)["event"] for x in stream.getvalue().splitlines()]
    assert events == ["in-event x"]


def test_sighup_applies_a_new_log_level(tmp_path, daemon_factory) -> None:
    """A reload that changes ``log_level`` takes effect at once: an operator turning debug on
    to chase a problem must not need a restart (which would lose the state being chased)."""
    import signal

    import yaml

    from tests.daemon.conftest import base_config, coco_bytes, files

    (tmp_path / "inbox").mkdir()
    config = base_config(tmp_path, log_level="info")
    d = daemon_factory(config).start()
    d.wait_ready()
    (tmp_path / "inbox" / "a.json").write_bytes(coco_bytes())
    d.wait_for(lambda: "a.zip" in files(tmp_path / "outbox"), what="a.zip")
    assert d.events("inbox.scan") == [], "info level: no debug events before the reload"
    d.config_path.write_text(yaml.safe_dump({**config, "log_level": "debug"}))
    d.signal(signal.SIGHUP)
    d.wait_for(lambda: d.events("config.reloaded"), what="config.reloaded")
    (tmp_path / "inbox" / "b.json").write_bytes(coco_bytes())
    d.wait_for(lambda: "b.zip" in files(tmp_path / "outbox"), what="b.zip")
    d.wait_for(lambda: d.events("inbox.scan"), what="a debug event after the reload")
    assert d.stop() == 0
