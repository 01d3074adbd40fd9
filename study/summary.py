"""A run's summary in words: status, final understanding against the random-init floor and chance."""

from __future__ import annotations

from study.runstore import RunStore

HEADLINE = ("caption_loss", "zs_acc", "zs_acc/size", "zs_acc/colour", "zs_acc/shape", "zs_acc/location",
            "zs_acc/count", "probe_acc/shape", "probe_acc/colour", "probe_acc/size", "sem/cos", "pix/psnr")


def _floor_key(key: str) -> str | None:
    if key.startswith("zs_acc"):
        return "chance" + key.removeprefix("zs_acc")
    if key.startswith("probe_acc/"):
        return "chance/probe_" + key.removeprefix("probe_acc/")
    return None


def summarise_run(path: str) -> str:
    """A run's config, state and latest metrics in a few lines (`unihetero summary`)."""
    store = RunStore(path)
    cfg, status = store.config(), store.status()
    evals = store.records("eval.jsonl")
    lines = [f"run {cfg.run_id()}  {store.path}",
             f"status: {status['state']}" + (f" ({status['reason']})" if "reason" in status else ""),
             f"target={cfg.objective.target} D={cfg.data.unique_samples} samples_seen={cfg.train.samples_seen} "
             f"masking={cfg.masking.distribution} model={cfg.model.size}"]
    if not evals:
        return "\n".join(lines + ["no evaluations yet"])
    floor, last = evals[0], evals[-1]
    lines.append(f"{'metric':<18}{'step 0':>10}{'step ' + str(last['step']):>12}{'chance':>10}")
    for key in HEADLINE:
        if key not in last:
            continue
        chance = last.get(_floor_key(key) or "", float("nan"))
        lines.append(f"{key:<18}{floor.get(key, float('nan')):>10.3f}{last[key]:>12.3f}{chance:>10.3f}")
    metrics = store.records("metrics.jsonl")
    if metrics:
        rate = sum(m["samples_per_s"] for m in metrics) / len(metrics)
        lines.append(f"mean throughput {rate:.0f} samples/s, {metrics[-1]['flops']:.3g} training FLOPs")
    return "\n".join(lines)
