"""The Ray engine from the command line, against Ray processes of its own: a ``ray start`` head on
127.0.0.1 joined with ``--address``, and Ctrl-C in the middle of a run.

Each test starts Ray in a new session of processes and ends that session by its process group, so
nothing it started outlives it. Every Ray here keeps to 127.0.0.1 (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ray_workload import export_model, write_images

pytest.importorskip("ray", reason="Ray is not installed (pip install 'foldkit[ray]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'foldkit[ray]')")

REPO = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")
# Token authentication with a token of this run's own (not ~/.ray/auth_token, which other runs share).
LOOPBACK_ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _end_session(process: subprocess.Popen) -> None:
    """Stop a process started with start_new_session and everything left in its process group."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            continue
        time.sleep(2)  # the group's other members (raylet, GCS) finish their own shutdown


def _detect(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "foldkit.cli", "detect", *args], cwd=REPO, env=LOOPBACK_ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cluster")
    return export_model(folder, 416), write_images(folder / "images", 24)


@pytest.mark.slow
def test_address_joins_a_running_head_on_loopback(workload, tmp_path):
    if not RAY.exists():
        pytest.skip(f"no ray command beside {sys.executable}")
    model, images = workload
    port = _free_port()
    temp = Path(os.environ.get("TMPDIR", "/tmp")) / f"fk-ray-{os.getpid()}"  # Ray's socket paths must be short
    head = subprocess.Popen(
        [str(RAY), "start", "--head", "--block", "--port", str(port), "--num-cpus", "2", "--include-dashboard",
         "false", "--disable-usage-stats", "--temp-dir", str(temp)], env=LOOPBACK_ENV, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        run = _detect(str(model), str(images[0].parent), "--engine", "ray", "--address", f"127.0.0.1:{port}",
                      "--workers", "2", "--batch", "2", "--conf", "0.6", "--table", str(tmp_path / "rows.jsonl"))
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err
        assert "24 image(s)" in out and "2 Ray actor(s) × 1 thread(s)" in out
        rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
        assert sorted(r["image"] for r in rows) == sorted(map(str, images))
    finally:
        _end_session(head)


@pytest.mark.slow
def test_ctrl_c_stops_the_job_and_leaves_no_output(workload, tmp_path):
    model, images = workload
    out = tmp_path / "out"
    run = _detect(str(model), str(images[0].parent), "--engine", "ray", "--workers", "1", "-o", str(out),
                  "--conf", "0.6")
    try:
        deadline = time.monotonic() + 300
        while not (out.is_dir() and any(out.iterdir())) and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # until the first results are staged in the output folder
        assert run.poll() is None, run.communicate()[1]
        os.killpg(run.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole foreground group
        _, err = run.communicate(timeout=120)
        assert run.returncode == 130, err
        assert "interrupted" in err and not out.exists()
    finally:
        _end_session(run)
