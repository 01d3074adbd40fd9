"""Joining a Ray cluster from the CLI: a real head with token authentication refuses a client without
RAY_AUTH_MODE=token in one line that names the fix, and accepts one with it; an address where nothing
listens fails within --ray-timeout. Neither failure writes anything to the runs directory."""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from study.runstore import RunStore
from tests.conftest import free_port
from tests.grid_specs import ray_cli_launch, run_dirs, write_grid_spec

pytest.importorskip("ray")
RAY = Path(sys.executable).with_name("ray")


@pytest.fixture(scope="module")
def token_head():
    """A Ray head on this machine with token authentication, its own temp dir and token; (address, token)."""
    import ray

    if tuple(int(p) for p in ray.__version__.split(".")[:2]) < (2, 52):  # `make test-floors` runs the floor, 2.41
        pytest.skip(f"token authentication is a Ray 2.52 feature; this is Ray {ray.__version__}")
    token, port = secrets.token_hex(32), free_port()
    temp = tempfile.mkdtemp(prefix="rtok", dir="/tmp")  # short: Ray's socket paths live under it
    env = os.environ | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    head = subprocess.Popen([str(RAY), "start", "--head", "--block", "--port", str(port), "--num-cpus", "1",
                             "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", temp],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the token-authenticated Ray head did not start within 60 s")
        yield f"127.0.0.1:{port}", token
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(15)
        subprocess.run(["pkill", "-KILL", "-f", temp], check=False)  # workers outside the process group
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.ray
@pytest.mark.slow
def test_token_cluster_refuses_a_client_without_the_mode_then_accepts_it(tmp_path, token_head):
    address, token = token_head
    grid, runs = write_grid_spec(tmp_path, "seeds: [0]\n"), tmp_path / "runs"
    refused = ray_cli_launch(grid, runs, address, {"RAY_AUTH_TOKEN": token})
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert f"Ray cluster at {address} wants an authentication token: set RAY_AUTH_MODE=token" in refused.stderr
    assert "~/.ray/auth_token" in refused.stderr
    assert not runs.exists()

    wrong = ray_cli_launch(grid, runs, address, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64})
    assert wrong.returncode == 2 and "refused this process's authentication token" in wrong.stderr
    assert not runs.exists()

    accepted = ray_cli_launch(grid, runs, address, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    (run,) = run_dirs(grid, runs)
    assert RunStore(run).status()["state"] == "completed"


def test_address_where_nothing_listens_fails_within_the_timeout(tmp_path):
    grid, runs = write_grid_spec(tmp_path, "seeds: [0]\n"), tmp_path / "runs"
    port = free_port()  # bound then released: nothing listens there
    started = time.monotonic()
    result = ray_cli_launch(grid, runs, f"127.0.0.1:{port}", {}, "--ray-timeout", "3")
    assert time.monotonic() - started < 60
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: no Ray cluster answers at 127.0.0.1:{port}")
    assert not runs.exists()


@pytest.mark.ray
def test_address_that_accepts_but_never_answers_fails_within_the_timeout(tmp_path):
    grid, runs = write_grid_spec(tmp_path, "seeds: [0]\n"), tmp_path / "runs"
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)  # the kernel completes handshakes; nobody ever replies
        port = silent.getsockname()[1]
        started = time.monotonic()
        result = ray_cli_launch(grid, runs, f"127.0.0.1:{port}", {}, "--ray-timeout", "4")
        elapsed = time.monotonic() - started
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "did not let this process join within --ray-timeout 4 s" in result.stderr
    assert elapsed < 4 + 30  # the timeout plus the interpreter's start
    assert not runs.exists()
