"""`make bench`: run every benchmark and write benchmarks/results/*-<machine>.json."""

from __future__ import annotations

from benchmarks import data_throughput


def main() -> None:
    data_throughput.main()


if __name__ == "__main__":
    main()
