"""An evaluation split across the ranks of a run: each rank takes one contiguous block of the rows, the results are
gathered back in rank order, and every rank makes as many forwards as the busiest one (under FSDP each forward
all-gathers parameters, so the ranks' forwards must pair up). With one rank every step is the identity."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Split:
    """How evaluation rows are dealt to ranks and gathered back in order."""

    rank: int = 0
    world: int = 1

    def rows(self, n: int) -> slice:
        """This rank's block of `n` rows (as torch.tensor_split deals them: the first n % world blocks one longer)."""
        size, extra = divmod(n, self.world)
        start = self.rank * size + min(self.rank, extra)
        return slice(start, start + size + (self.rank < extra))

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """Every rank's `local` rows, concatenated in rank order, on `local`'s device."""
        if self.world == 1:
            return local
        parts: list = [None] * self.world
        dist.all_gather_object(parts, local.detach().cpu())
        return torch.cat(parts).to(local.device)

    def most(self, count: int) -> int:
        """The largest `count` over the ranks."""
        if self.world == 1:
            return count
        counts: list = [None] * self.world
        dist.all_gather_object(counts, count)
        return max(counts)


ONE = Split()  # one process: nothing split
