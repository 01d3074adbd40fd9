"""The training step's numbers kept on their device between log steps, so the step never waits for the host.

Losses, the grad norm, token and FLOP counts are summed in float64 (int64 for tokens) where they were computed, and
whether a loss went non-finite is tracked there too (the first such step and its values). `flush` reads them
once, at a log, evaluation or checkpoint step, into the run's log accumulators (plain numbers, as checkpoints hold
them): float64 sums started from zero at each log interval add up exactly as the former per-step host floats did.
"""

from __future__ import annotations

import math

import torch


class NonFinite(Exception):
    """A loss went non-finite: `step` is the first such step, `reason` names the losses and their values."""

    def __init__(self, step: int, reason: str):
        super().__init__(reason)
        self.step, self.reason = step, reason


class DeviceLog:
    """Per-step losses and counts summed on their device, read to the host once per log step."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, torch.Tensor] = {}
        self.first_bad: torch.Tensor | None = None  # the first non-finite step (0: none yet)
        self.bad_values: torch.Tensor | None = None

    def add(self, values: dict[str, torch.Tensor], counts: dict[str, torch.Tensor], step: int) -> None:
        """One step's global mean losses (and grad norm) and its token and FLOP counts, `step` counted from 1."""
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v.detach().double()
        for k, v in counts.items():
            self.counts[k] = self.counts.get(k, 0.0) + v
        losses = torch.stack([v.detach().double() for k, v in values.items() if k != "grad_norm"])
        newly_bad = ~torch.isfinite(losses).all()
        if self.first_bad is None:
            self.first_bad, self.bad_values = torch.zeros((), dtype=torch.int64, device=losses.device), losses
        newly_bad = newly_bad & (self.first_bad == 0)
        self.first_bad = torch.where(newly_bad, step, self.first_bad)
        self.bad_values = torch.where(newly_bad, losses, self.bad_values)

    def check(self) -> None:
        """Raise NonFinite if a loss went non-finite since the last check (a host read)."""
        if self.first_bad is None or int(self.first_bad) == 0:
            return
        names = [k for k in self.sums if k != "grad_norm"]
        values = dict(zip(names, self.bad_values.tolist(), strict=True))
        bad = ", ".join(f"{k}={v}" for k, v in values.items() if not math.isfinite(v))
        raise NonFinite(int(self.first_bad), f"non-finite loss at step {int(self.first_bad)}: {bad}")

    def flush(self, acc: dict) -> None:
        """Check, then add the sums since the last flush into the log accumulators, and start again."""
        self.check()
        if not self.counts:
            return
        for k, v in zip(self.sums, torch.stack(list(self.sums.values())).tolist(), strict=True):
            acc["sum"][k] = acc["sum"].get(k, 0.0) + v
        tokens, flops = torch.stack([self.counts["tokens"].double(), self.counts["flops"]]).tolist()
        acc["tokens"] += int(tokens)
        acc["flops"] += flops
        self.sums, self.counts, self.first_bad, self.bad_values = {}, {}, None, None
