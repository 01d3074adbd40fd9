"""What W&B has kept of a run: the history rows of the transaction logs (`run-<id>.wandb`) that W&B writes in each
session's directory, online or offline, before it syncs or uploads them.

The layout is W&B's record log: a 7-byte header (':W&B', 0xBEE1, a version byte), then 32 KiB blocks of chunks,
each with a 7-byte header (CRC-32, length, type: full, first, middle or last) and a piece of one of W&B's protobuf
`Record` messages; a block's tail too short for a chunk header is padding. A process killed with -9 leaves the
log cut at what W&B had written: reading stops there.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

BLOCK, HEADER = 32768, 7
FULL, LAST = 1, 4


def records(path: Path) -> Iterator:
    """W&B's `Record` messages in one transaction log, in the order written."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    if data[:4] != b":W&B" or len(data) < HEADER or struct.unpack("<H", data[4:6])[0] != 0xBEE1:
        return
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0 or pos + HEADER + length > len(data):  # where a killed writer stopped
            return
        pending += data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            try:
                record.ParseFromString(pending)
            except DecodeError:
                return
            pending = b""
            yield record


def session_logs(directory: Path, wandb_id: str) -> list[Path]:
    """The transaction logs of W&B run `wandb_id` under a W&B `dir`, one per session, oldest first (a session's
    directory is `<mode>-run-<time>-<id>`, with `-1`, `-2` ... added when two start within the same second; W&B's
    `latest-run` link to the newest is left out)."""
    return sorted(p for p in directory.glob(f"wandb/*/run-{wandb_id}.wandb") if not p.parent.is_symlink())


def history(logs: Iterable[Path]) -> list[dict]:
    """The history rows (one per `log` call) of these logs, in order."""
    return [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            for path in logs for r in records(path) if r.WhichOneof("record_type") == "history"]


def kept(logs: Iterable[Path], step_metric: str, eval_prefix: str) -> dict[str, dict[str, int]]:
    """Per run-store records file, the last step W&B kept and how many records of that step: evaluation rows are
    those with a metric named with `eval_prefix`."""
    out: dict[str, dict[str, int]] = {}
    for row in history(logs):
        if step_metric not in row:
            continue
        file = "eval.jsonl" if any(k.startswith(eval_prefix) for k in row) else "metrics.jsonl"
        step, last = int(row[step_metric]), out.get(file)
        out[file] = {"step": step, "records": last["records"] + 1 if last and last["step"] == step else 1}
    return out
