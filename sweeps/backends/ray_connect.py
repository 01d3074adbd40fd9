"""Joining a running Ray cluster: a bounded wait, and one-line errors that name the cause and the fix.

`ray.init(address=...)` alone retries for minutes when nothing listens at the address, and prints
tracebacks when the cluster wants an authentication token this process does not send. Here the
address is probed first (TCP), then a child process shakes hands with its GCS, both within the
timeout, and only then does this process join; every failure is a `UserError` naming the address. Once
joined, `check_runs_dir` has every node write a probe file into the runs directory that this process reads
back, so a runs directory some node cannot see fails before any trial starts.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from study.errors import UserError

DEFAULT_TOKEN_FILE = Path("~/.ray/auth_token")


def host_port(address: str) -> tuple[str, int]:
    """'HOST:PORT' (or 'ray://HOST:PORT') -> (host, port); anything else is a UserError."""
    bare = address.removeprefix("ray://")
    host, sep, port = bare.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--ray-address '{address}': expected HOST:PORT of a running Ray cluster's head")
    return host.strip("[]"), int(port)


def token_hint() -> str:
    """Where Ray looks for the token, and what it finds there."""
    order = f"the token is read from $RAY_AUTH_TOKEN, else $RAY_AUTH_TOKEN_PATH, else {DEFAULT_TOKEN_FILE}"
    if os.environ.get("RAY_AUTH_TOKEN"):
        return f"{order} ($RAY_AUTH_TOKEN is set)"
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or DEFAULT_TOKEN_FILE).expanduser()
    state = "found" if path.is_file() else "missing: copy the head's token there"
    return f"{order} ({path}: {state})"


def _is_auth_error(error: BaseException) -> bool:
    """Whether an exception, or one in its chain, is Ray refusing the (absent) token."""
    seen: BaseException | None = error
    while seen is not None:
        if type(seen).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def auth_error_message(address: str) -> str:
    """A one-line error for a Ray cluster that refused this process's authentication."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        return (f"Ray cluster at {address} refused this process's authentication token (RAY_AUTH_MODE=token is "
                f"set): use the head's token; {token_hint()}")
    return (f"Ray cluster at {address} wants an authentication token: set RAY_AUTH_MODE=token "
            f"(e.g. RAY_AUTH_MODE=token unihetero sweep launch ...); {token_hint()}")


def probe(address: str, timeout_s: float) -> None:
    """A TCP connection to the head's port within `timeout_s`, or a UserError naming the address."""
    host, port = host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as e:
        why = "timed out" if isinstance(e, TimeoutError) else (e.strerror or e.__class__.__name__).lower()
        raise UserError(f"no Ray cluster answers at {address} ({why} within --ray-timeout {timeout_s:g} s): start "
                        f"one with 'ray start --head --port {port}' or fix --ray-address") from None


HANDSHAKE = "import sys\nfrom ray._raylet import GcsClient\nGcsClient(address=sys.argv[1])\n"


def handshake(address: str, timeout_s: float, limit_s: float) -> None:
    """One GCS handshake with Ray's own client, in a child process that is killed at the timeout (a thread
    stuck in Ray's C++ client cannot be stopped): a missing token is refused at once, where `ray.init` retries
    for 20 s and prints its retries; a port that never answers is found out within `timeout_s` (what is left
    of the user's `limit_s`)."""
    try:
        done = subprocess.run([sys.executable, "-c", HANDSHAKE, address], capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise UserError(f"Ray cluster at {address} accepted a connection but did not let this process join within "
                        f"--ray-timeout {limit_s:g} s: is it a Ray head's GCS port (default 6379)?") from None
    if done.returncode == 0:
        return
    if "AuthenticationError" in done.stderr or "InvalidAuthToken" in done.stderr:
        raise UserError(auth_error_message(address))
    last = next((line for line in reversed(done.stderr.splitlines()) if line.strip()), "no message")
    raise UserError(f"cannot join the Ray cluster at {address}: {last.strip()[:300]}")


def join(address: str, timeout_s: float) -> None:
    """Join the cluster at `address` within about `timeout_s` seconds, or fail with a one-line UserError."""
    import ray

    start = time.monotonic()
    probe(address, timeout_s)
    handshake(address, max(1.0, timeout_s - (time.monotonic() - start)), timeout_s)
    try:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError) as e:  # the handshake passed, so this is rare: a head going away
        if _is_auth_error(e):
            raise UserError(auth_error_message(address)) from None
        raise UserError(f"cannot join the Ray cluster at {address}: {str(e).splitlines()[0][:300]}") from None


PROBE_PREFIX = ".ray-probe-"


def _write_probe(directory: str, name: str, node_id: str) -> str:
    """On one node: write the probe file; '' when written, else why not."""
    try:
        (Path(directory) / name).write_text(node_id)
        return ""
    except OSError as e:
        return e.strerror or e.__class__.__name__


def check_runs_dir(runs_dir: Path) -> None:
    """Every alive node of the cluster writes a probe file into `runs_dir` and this process reads it back, or a
    UserError names the first node that cannot: the run store must be storage that every node mounts. The probes
    are removed; a runs directory made for them and left empty is removed too."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    runs_dir = Path(runs_dir).resolve()
    made = not runs_dir.exists()
    runs_dir.mkdir(parents=True, exist_ok=True)
    write = ray.remote(num_cpus=0)(_write_probe)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    names = {n["NodeID"]: f"{PROBE_PREFIX}{n['NodeID'][:12]}-{os.getpid()}" for n in nodes}
    try:
        errors = ray.get([write.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                          .remote(str(runs_dir), names[n["NodeID"]], n["NodeID"]) for n in nodes])
        for node, error in zip(nodes, errors, strict=True):
            probe_file = runs_dir / names[node["NodeID"]]
            seen = probe_file.read_text() if probe_file.is_file() else None
            if error or seen != node["NodeID"]:
                why = f"it cannot write there ({error})" if error else "this process cannot read what it wrote"
                raise UserError(f"runs directory '{runs_dir}' is not shared with Ray node {node['NodeManagerAddress']} "
                                f"({node['NodeID'][:12]}): {why}; put --runs-dir on storage every node mounts")
    finally:
        for name in names.values():
            (runs_dir / name).unlink(missing_ok=True)
        if made and not any(runs_dir.iterdir()):
            runs_dir.rmdir()
