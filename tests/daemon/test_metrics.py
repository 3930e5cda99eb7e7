"""``metrics.listen``: Prometheus text at /metrics and /healthz, scraped over real HTTP from a
real daemon; the listener across SIGHUP; a bad address refused by check-config; the
systemd drop-in that lets the sandboxed units listen at all."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from smaskd.config import parse_config
from smaskd.errors import ConfigError
from smaskd.listen import Listen
from tests.conftest import REPO, run_cli
from tests.daemon.conftest import base_config, coco_bytes, files

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _scrape(port: int) -> Samples:
    status, text = _get(port, "/metrics")
    assert status == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_metrics_scraped_from_the_running_daemon(tmp_path: Path, daemon_factory) -> None:
    """Finished jobs by rule and outcome, their durations, the levels read at scrape time
    (a job parked behind a missing outbox: waiting, oldest age, a fault), /healthz, all
    while a hung client holds a connection; then
    SIGHUP moves the listener: a port in use keeps the old one serving (a problem in
    status.json), a free one is bound and the counters carry on."""
    first, second = _free_port(), _free_port()
    config = base_config(tmp_path, metrics={"listen": f"127.0.0.1:{first}"})
    config["rules"].insert(0, {"name": "parked", "match": {"glob": "park*.json"},
                               "action": "export", "outbox": str(tmp_path / "gone" / "out")})
    d = daemon_factory(config).start()
    d.wait_ready()
    # a client that sends half a request and hangs: jobs, scrapes and the stop go on
    hung = socket.create_connection(("127.0.0.1", first))
    hung.sendall(b"GET /metr")
    inbox = tmp_path / "inbox"
    (inbox / "good.json").write_bytes(coco_bytes())
    (inbox / "bad.json").write_text('{"neither": "coco nor datumaro"}')
    (inbox / "park.json").write_bytes(coco_bytes())
    d.wait_for(lambda: len(d.events("job.done")) + len(d.events("job.failed")) == 2
               and d.events("job.waiting"), what="good done, bad failed, park waiting")
    samples = _scrape(first)
    assert _value(samples, "smaskd_jobs_total", rule="auto", outcome="done") == 1
    assert _value(samples, "smaskd_jobs_total", rule="auto", outcome="failed") == 1
    assert _value(samples, "smaskd_job_duration_seconds_count", rule="auto") == 2
    assert _value(samples, "smaskd_job_duration_seconds_bucket", rule="auto", le="+Inf") == 2
    assert _value(samples, "smaskd_inbox_scan_seconds_count", inbox="in") >= 1
    assert _value(samples, "smaskd_queue_depth") == 0
    assert _value(samples, "smaskd_jobs_running") == 0
    assert _value(samples, "smaskd_jobs_waiting") == 1
    assert _value(samples, "smaskd_oldest_pending_age_seconds") > 0
    assert _value(samples, "smaskd_faults", kind="missing_folder") == 1
    assert _value(samples, "smaskd_faults", kind="no_space") == 0
    assert _value(samples, "smaskd_inbox_pending_files", inbox="in") == 0
    assert _get(first, "/healthz") == (200, "ok\n")
    assert _get(first, "/nothing")[0] == 404

    held = socket.socket()
    held.bind(("127.0.0.1", second))
    held.listen()
    moved = {**config, "metrics": {"listen": f"127.0.0.1:{second}"}}
    d.config_path.write_text(yaml.safe_dump(moved))
    d.signal(signal.SIGHUP)
    failed = d.wait_for(lambda: d.events("metrics.listen_failed"), what="listen_failed")
    assert failed[0]["listen"] == f"127.0.0.1:{second}" and "EADDRINUSE" in failed[0]["reason"]
    d.wait_for(lambda: any(
        p.startswith(f"metrics.listen 127.0.0.1:{second}: ") and
        f"still serving on 127.0.0.1:{first}" in p
        for p in json.loads((tmp_path / "state" / "status.json").read_text())["problems"]),
        what="the listener's problem in status.json")
    assert _value(_scrape(first), "smaskd_jobs_total", rule="auto", outcome="done") == 1

    held.close()
    d.signal(signal.SIGHUP)
    d.wait_for(lambda: any(e.get("port") == second for e in d.events("metrics.listening")),
               what=f"listening on {second}")
    assert _value(_scrape(second), "smaskd_jobs_total", rule="auto", outcome="failed") == 1
    with pytest.raises(urllib.error.URLError):
        _get(first, "/metrics")
    assert d.stop() == 0
    hung.close()
    assert files(tmp_path / "outbox") == ["bad.log.jsonl", "good.log.jsonl", "good.zip"]


@pytest.mark.parametrize("listen,says", [
    ("127.0.0.1", 'expected "HOST:PORT"'),
    ("127.0.0.1:0", "port '0': expected a number from 1 to 65535"),
    ("bad host:9464", "'bad host' is neither an IP address nor a host name"),
    ("1.2.3:9464", "'1.2.3' is not an IPv4 address"),
    ("::1:9464", 'an IPv6 address goes in brackets: "[::1]:9464"'),
    ("[fe80::zz]:9464", "'fe80::zz' in brackets is not an IPv6 address"),
    # str.isdigit() took these, and int() then raised (a traceback) or read the wrong port
    ("localhost:\u00b2", "port '\u00b2': expected a number from 1 to 65535"),
    ("127.0.0.1:\u0669\u0664\u0666\u0664", "expected a number from 1 to 65535"),
])
def test_a_bad_listen_address_is_refused(tmp_path: Path, listen: str, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(base_config(tmp_path, metrics={"listen": listen}))
    assert e.value.where == "metrics.listen" and says in e.value.message


def test_check_config_names_the_listen_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(base_config(tmp_path, metrics={"listen": "127.0.0.1:99999"})))
    done = run_cli("check-config", path)
    assert done.returncode == 78, done.stdout + done.stderr
    assert "metrics.listen: port '99999': expected a number from 1 to 65535" in done.stderr
    good = {"listen": "[::1]:9464"}
    assert parse_config(base_config(tmp_path, metrics=good)).metrics_listen == Listen("::1", 9464)
    assert parse_config(base_config(tmp_path)).metrics_listen is None  # off by default


def test_network_drop_in_lets_the_units_listen_and_notify(tmp_path: Path) -> None:
    """The units allow AF_UNIX only; one drop-in, named for what it allows (the metrics
    listener and notification commands that use the network, both told in the README to
    install it), resets that list to one with IPv4 and IPv6 (an empty assignment first: a
    drop-in's list would otherwise merge, which is right today but not obviously so), and
    systemd-analyze accepts unit + drop-in."""
    drop_in = REPO / "systemd" / "smaskd-network.conf"
    text = drop_in.read_text()
    assert "metrics.listen" in text and "notify.command" in text
    readme = (REPO / "README.md").read_text()
    for section, end in (("**Being told: notifications.**", "```yaml\nnotify:"),
                         ("### Metrics", "### Security")):
        start = readme.index(section)
        assert "systemd/smaskd-network.conf" in readme[start:readme.index(end, start)], \
            f"README {section} does not name the drop-in"
    values = [line.split("=", 1)[1] for line in drop_in.read_text().splitlines()
              if line.startswith("RestrictAddressFamilies=")]
    assert values[0] == "" and set(values[-1].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    for unit in ("smaskd.service", "smaskd@.service"):
        assert "RestrictAddressFamilies=AF_UNIX\n" in (REPO / "systemd" / unit).read_text()
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return  # the text checks above stand; verify needs systemd's tools
    unit = tmp_path / "smaskd.service"
    unit.write_text((REPO / "systemd" / "smaskd.service").read_text()
                    .replace("/opt/smaskd/venv/bin/smaskd", "/usr/bin/true"))
    (tmp_path / "smaskd.service.d").mkdir()
    shutil.copy(drop_in, tmp_path / "smaskd.service.d" / "network.conf")
    out = subprocess.run([tool, "verify", "--man=no", str(unit)], capture_output=True,
                         text=True, timeout=60)
    assert "network.conf" not in out.stdout + out.stderr, out.stdout + out.stderr
    assert out.returncode == 0, out.stdout + out.stderr
