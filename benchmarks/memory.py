"""Peak RSS of a training run at D = 1,000 and D = 1,000,000 unique samples (target: within 5%)."""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile

from benchmarks.common import write_result

# VmHWM, not ru_maxrss: on Linux ru_maxrss survives exec, so a child started by a big parent would
# report the parent's high-water mark.
CHILD = """
import sys
from study.config import load_config
from study.train import train
cfg = load_config(sys.argv[3], [f"data.unique_samples={sys.argv[1]}", f"train.samples_seen={sys.argv[4]}",
                                "eval.num_images=16", "eval.probe_images=40", "eval.inference_scaling=false"])
train(cfg, sys.argv[2], quiet=True)
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


def peak_rss_mb(unique_samples: int, preset: str = "cpu-small", samples_seen: int = 6400) -> float:
    """Peak resident memory (MB) of a process that trains `preset` on D = `unique_samples`."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-c", CHILD, str(unique_samples), tmp, preset, str(samples_seen)],
                             capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1]) / 1024  # VmHWM is in KiB


def main() -> dict:
    small, large = peak_rss_mb(1_000), peak_rss_mb(1_000_000)
    ratio = large / small
    result = {"peak_rss_mb_D1e3": small, "peak_rss_mb_D1e6": large, "ratio": ratio, "target": "within 5%",
              "met": abs(ratio - 1) <= 0.05, "self_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(f"memory: peak RSS {small:.0f} MB at D=1e3 vs {large:.0f} MB at D=1e6 -> ratio {ratio:.3f} "
          f"-> {write_result('memory', result)}")
    return result


if __name__ == "__main__":
    main()
