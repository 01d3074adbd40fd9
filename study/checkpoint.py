"""Every checkpoint's I/O: a run's checkpoints (one file gathered to rank 0, or sharded with
torch.distributed.checkpoint, DCP), the weights an upstream run exports, and the modules a run loads from them.
Everything is loaded with `safe_load` (weights only: a pickle payload in a file is never executed).

    step_XXXXXXXX.pt    full state dicts (model, optimizer, scheduler, step, RNG, log accumulators): any number
                        of ranks resumes from it, each reading the whole file
    step_XXXXXXXX/      sharded: __<rank>_0.distcp (each rank writes and reads its own shards), .metadata (DCP),
                        trainer.pt (scheduler, step, RNG, accumulators, data position) and sources.json

A sharded checkpoint leaves out the frozen modules a run loads from disk (a pretrained encoder, the VAE, a frozen
target projector): sources.json records each one's config key, path and fingerprint, and a resume over a changed
file is refused. It is written into a hidden temp directory that rank 0 renames into place once every rank's
shards and the metadata are on disk, so a kill leaves the previous checkpoint as it was; optionally the write
runs in a background thread (`train.checkpoint_async`). DCP reshards on load: a run resumes on another number of
ranks. The data position is the step (the global sample order is a function of seed, epoch and position, see
study/data/sample_order.py), so a resumed run reads on from where it stopped.

An upstream run (an encoder-pretraining stage) also exports its final weights beside its records (`weights.pt`,
committed with them, their sha256 in its status), which downstream runs load with `load_module_weights`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import shutil
import warnings
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from study import distributed
from study.config import RunConfig
from study.distributed import Ranks
from study.errors import UserError
from study.files import atomic_write, fsync_dir, naming
from study.runstore import RunStore, checkpoint_step, os_error_behind, sha256
from study.upstream import WEIGHTS

KEEP_CHECKPOINTS = 2
SOURCES = "sources.json"
TRAINER = "trainer.pt"
HASHED_BYTES = 16 << 20  # files up to this size are hashed in a fingerprint; larger ones (weight shards) sized
SHARDED_OPTIONS = StateDictOptions(flatten_optimizer_state_dict=True)


def safe_load(path: Path | str) -> Any:
    """A checkpoint or weights file on CPU, weights only (tensors, numbers, strings and containers)."""
    return torch.load(path, map_location="cpu", weights_only=True)


# -- one-file checkpoints, kept in the run directory ----------------------------------------------
def save_full(store: RunStore, step: int, state: dict) -> Path:
    """Write a whole-state checkpoint of `step` atomically, then keep the newest KEEP_CHECKPOINTS."""
    path = store.checkpoint_dir / f"step_{step:08d}.pt"
    try:
        atomic_write(path, lambda f: torch.save(state, f))
    except RuntimeError as e:  # the disk filled (or failed) mid-write: say so, naming the checkpoint
        cause = os_error_behind(e)
        if cause is None:
            raise
        raise naming(cause, path) from e
    prune(store)
    return path


def commit_sharded(store: RunStore, tmp: Path, step: int) -> Path:
    """Rename a fully written sharded checkpoint into place (atomic: a kill leaves only `tmp`), then prune."""
    path = store.checkpoint_dir / f"step_{step:08d}"
    if path.exists():  # the same step written again by a resumed run
        shutil.rmtree(path)
    os.replace(tmp, path)
    fsync_dir(store.checkpoint_dir)
    prune(store)
    return path


def prune(store: RunStore) -> None:
    """Delete all but the newest KEEP_CHECKPOINTS checkpoints of the run."""
    for old in store.checkpoints()[:-KEEP_CHECKPOINTS]:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def read_checkpoint(path: Path) -> dict:
    """A checkpoint of either format as full state dicts on CPU (a sharded one's model without the frozen modules it
    left out)."""
    return read_sharded(path) if path.is_dir() else safe_load(path)


def load_latest(store: RunStore) -> dict | None:
    """The newest loadable checkpoint of the run, as `read_checkpoint` gives it; a corrupt one is skipped with a
    warning naming it."""
    for path in reversed(store.checkpoints()):
        try:
            return read_checkpoint(path)
        except Exception as e:  # truncated or garbage file: fall back to the previous one
            warnings.warn(f"{path}: unreadable checkpoint ({e.__class__.__name__}), using an earlier one",
                          stacklevel=2)
    return None


def load_at_step(store: RunStore, step: int | None) -> dict:
    """The run's checkpoint at `step` (default: the latest); a step with none names the steps kept."""
    paths = {checkpoint_step(p): p for p in store.checkpoints()}
    if not paths:
        raise UserError(f"run '{store.path}': no checkpoint (committed records carry none: train the run again "
                        "in a new runs directory to evaluate it)")
    step = max(paths) if step is None else step
    if step not in paths:
        raise UserError(f"--step {step}: no checkpoint at that step (kept: {', '.join(map(str, sorted(paths)))})")
    try:
        return read_checkpoint(paths[step])
    except (OSError, RuntimeError, pickle.UnpicklingError) as e:
        raise UserError(f"checkpoint '{paths[step]}' is unreadable or not weights only: "
                        f"{e.__class__.__name__}") from None


# -- an upstream run's exported weights, and the modules downstream runs load --------------------
def export_weights(store: RunStore, model_state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Write a completed upstream run's final weights beside its records; the status fields that name them."""
    path = store.path / WEIGHTS
    atomic_write(path, lambda f: torch.save(model_state, f))
    return {"weights": WEIGHTS, "weights_sha256": sha256(path)}


def load_module_weights(path: str, module: str, key: str) -> dict[str, torch.Tensor]:
    """One module's state dict from a run checkpoint ('model' with '<module>.' keys), exported weights or a bare
    state dict; `key` names the config key in errors."""
    try:
        state = safe_load(path)
    except (OSError, RuntimeError, pickle.UnpicklingError) as e:
        raise UserError(f"config key '{key}': cannot load '{path}': {e.__class__.__name__}") from None
    state = state.get("model", state)
    prefix = f"{module}."
    if any(k.startswith(prefix) for k in state):
        state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    return state


# -- checkpoints during training -------------------------------------------------------------
def frozen_sources(cfg: RunConfig, digests: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """The modules the run loads from disk and never trains, by state-dict prefix: their config key, path (`cfg`
    with its upstream references resolved to files) and, where known, the file's sha256 (`digests` by config
    key: the upstream weights, hashed once when they were resolved)."""
    m, o = cfg.model, cfg.objective
    out: dict[str, dict[str, Any]] = {}
    if o.task != "vlm":
        return out
    if m.freeze_encoder and (m.encoder_checkpoint or m.backbone == "hf"):
        key = "encoder_checkpoint" if m.encoder_checkpoint else "vision_path"
        out["encoder."] = {"key": f"model.{key}", "path": getattr(m, key)}
    if m.backbone == "hf" and "pixel" in o.parts():
        out["latents."] = {"key": "model.vae_path", "path": m.vae_path}
    if o.target_projector and o.target_ema == 0 and "semantic_input" in o.parts():
        out["ema_projector."] = {"key": "objective.target_projector", "path": o.target_projector}
    for source in out.values():
        source["sha256"] = (digests or {}).get(source["key"])
    return out


def fingerprint(path: str | Path, digest: str | None = None) -> dict[str, list]:
    """Each file of `path` (a file or a directory) with its size, and the sha256 of those up to HASHED_BYTES (a
    file's known `digest` is used as it is)."""
    root = Path(path)
    if digest is not None and root.is_file():
        return {root.name: [root.stat().st_size, digest if root.stat().st_size <= HASHED_BYTES else None]}
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    out = {}
    for file in files:
        size = file.stat().st_size
        digest = hashlib.sha256(file.read_bytes()).hexdigest() if size <= HASHED_BYTES else None
        out[str(file.relative_to(root)) if file != root else file.name] = [size, digest]
    return out


@contextlib.contextmanager
def _one_process_quiet() -> Iterator[None]:
    """DCP warns on every single-process save and load that it assumes one process: here it is meant."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _without_frozen(state: dict, prefixes: list[str]) -> dict:
    return {k: v for k, v in state.items() if not any(k.startswith(p) for p in prefixes)}


def sharded(cfg: RunConfig, ranks: Ranks) -> bool:
    """Whether this run writes sharded checkpoints."""
    fmt = cfg.train.checkpoint_format
    return fmt == "sharded" or (fmt == "auto" and ranks.world > 1)


class Checkpointer:
    """Saves and restores a run's model, optimizer, scheduler, RNG and log accumulators; every rank calls it."""

    def __init__(self, store: RunStore, cfg: RunConfig, ranks: Ranks, model: nn.Module,
                 opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
                 digests: dict[str, str] | None = None):
        self.store, self.cfg, self.ranks = store, cfg, ranks
        self.model, self.opt, self.sched = model, opt, sched
        self.sharded = sharded(cfg, ranks)
        self.frozen = frozen_sources(cfg, digests)
        self.pending: tuple[Future, Path, int, contextlib.ExitStack] | None = None
        # a background write's collectives need a group of their own, off the training stream's
        self.group = dist.new_group(backend="gloo") if cfg.train.checkpoint_async and dist.is_initialized() else None

    # -- saving -------------------------------------------------------------------------------
    def save(self, step: int, acc: dict, background: bool = True) -> None:
        """Write the checkpoint of `step`; in the background if the run asks for it and `background`."""
        self.wait()
        if not self.sharded:
            state = {"model": distributed.full_model_state(self.model),
                     "optimizer": distributed.full_optimizer_state(self.model, self.opt),
                     "scheduler": self.sched.state_dict(), "step": step, "rng": torch.get_rng_state(),
                     "accumulators": acc}
            if self.ranks.main:  # rank 0 alone writes
                save_full(self.store, step, state)
            return
        tmp = self.store.checkpoint_dir / f".step_{step:08d}.tmp"
        state, param_groups = self._state()
        if self.ranks.main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            torch.save({"scheduler": self.sched.state_dict(), "step": step, "rng": torch.get_rng_state(),
                        "accumulators": json.loads(json.dumps(acc)), "param_groups": param_groups,
                        "samples_read": step * self.cfg.train.batch_size}, tmp / TRAINER)
            sources = {prefix: {"key": src["key"], "path": src["path"],
                                "fingerprint": fingerprint(src["path"], src["sha256"])}
                       for prefix, src in self.frozen.items()}
            (tmp / SOURCES).write_text(json.dumps({"world_size": self.ranks.world, "frozen": sources}, indent=1))
        distributed.barrier(self.ranks)  # the directory exists before any rank writes into it
        if self.cfg.train.checkpoint_async and background:
            quiet = contextlib.ExitStack()  # held until `wait`: DCP's writer thread warns too, later
            quiet.enter_context(_one_process_quiet())
            try:
                future = dcp.async_save(state, checkpoint_id=tmp, process_group=self.group,
                                        no_dist=not dist.is_initialized())
            except BaseException:
                quiet.close()
                raise
            self.pending = (future, tmp, step, quiet)
            return
        with _one_process_quiet():
            dcp.save(state, checkpoint_id=tmp, no_dist=not dist.is_initialized())
        self._commit(tmp, step)

    def wait(self) -> None:
        """Finish a background write in flight (rank 0 then renames it into place)."""
        if self.pending is not None:
            future, tmp, step, quiet = self.pending
            self.pending = None
            with quiet:
                future.result()
            self._commit(tmp, step)

    def _commit(self, tmp: Path, step: int) -> None:
        if self.ranks.main:  # DCP writes the metadata after every rank's shards: the checkpoint is whole
            commit_sharded(self.store, tmp, step)

    def _state(self) -> tuple[dict, dict]:
        """What DCP writes (this rank's model shards without the frozen modules, and its optimizer-state shards),
        and the optimizer's hyperparameters per parameter (the same on every rank: trainer.pt holds them)."""
        model = _without_frozen(get_model_state_dict(self.model), list(self.frozen))
        opt = get_optimizer_state_dict(self.model, self.opt, options=SHARDED_OPTIONS)
        groups = {k: v for k, v in opt.items() if k.startswith("param_groups.")}
        return {"model": model, "optimizer": {k: v for k, v in opt.items() if k not in groups}}, groups

    # -- restoring ----------------------------------------------------------------------------
    def restore(self) -> tuple[int, dict] | None:
        """Load the newest loadable checkpoint of either format; its step and log accumulators (None: none)."""
        for path in reversed(self.store.checkpoints()):
            try:
                return self._restore_sharded(path) if path.is_dir() else self._restore_full(path)
            except UserError:
                raise
            except Exception as e:  # truncated or garbage: fall back to the previous one
                warnings.warn(f"{path}: unreadable checkpoint ({e.__class__.__name__}), using an earlier one",
                              stacklevel=2)
        return None

    def _restore_full(self, path: Path) -> tuple[int, dict]:
        state = safe_load(path)
        distributed.load_state(self.model, self.opt, state["model"], state["optimizer"])
        return self._restore_trainer(state)

    def _restore_sharded(self, path: Path) -> tuple[int, dict]:
        self._check_sources(path)
        trainer = safe_load(path / TRAINER)
        saved = dcp.FileSystemReader(path).read_metadata().state_dict_metadata
        state, _ = self._state()  # the template (every parameter with state): this run's shards, at any world size
        params = {k.removeprefix("state.").rsplit(".", 1)[0] for k in state["optimizer"] if k.startswith("state.")}
        never_stepped = {fqn for fqn in params if f"optimizer.state.{fqn}.step" not in saved}
        with _one_process_quiet():
            dcp.load(state, checkpoint_id=path, planner=DefaultLoadPlanner(allow_partial_load=bool(never_stepped)),
                     no_dist=not dist.is_initialized())
        set_model_state_dict(self.model, state["model"], options=StateDictOptions(strict=False))
        set_optimizer_state_dict(self.model, self.opt, state["optimizer"] | trainer["param_groups"],
                                 options=SHARDED_OPTIONS)
        by_name = dict(self.model.named_parameters(remove_duplicate=False))
        for fqn in never_stepped:  # a parameter without a gradient so far has no state, as in an unbroken run
            self.opt.state.pop(by_name[fqn], None)
        return self._restore_trainer(trainer)

    def _restore_trainer(self, state: dict) -> tuple[int, dict]:
        self.sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        return state["step"], state["accumulators"]

    def _check_sources(self, path: Path) -> None:
        """Refuse to resume over frozen weights that are not the ones the checkpoint was written over."""
        recorded = json.loads((path / SOURCES).read_text())["frozen"]
        for prefix, src in self.frozen.items():
            was = recorded.get(prefix)
            if was is None:
                raise UserError(f"config key '{src['key']}': checkpoint {path} holds no record of a frozen "
                                f"'{prefix.rstrip('.')}' (written by another config)")
            # the content, not the path: a moved runs directory may resume
            if was["fingerprint"] != fingerprint(src["path"], src["sha256"]):
                raise UserError(f"config key '{src['key']}': '{src['path']}' is not the file set checkpoint {path} "
                                f"was written over (sizes or digests differ); resume with the original weights")


def read_sharded(path: Path) -> dict:
    """A sharded checkpoint read back in one process as full state dicts on CPU: 'model' (without the frozen modules
    it left out), 'step' and the rest of trainer.pt."""
    saved = dcp.FileSystemReader(path).read_metadata().state_dict_metadata
    model = {k: torch.empty(md.size, dtype=md.properties.dtype) for k, md in saved.items()
             if k.startswith("model.") and isinstance(md, TensorStorageMetadata)}
    with _one_process_quiet():
        dcp.load(model, checkpoint_id=path, no_dist=True)
    state = safe_load(path / TRAINER)
    return {**state, "model": {k.removeprefix("model."): v for k, v in model.items()}}


def load_weights(model: nn.Module, cfg: RunConfig, weights: dict[str, torch.Tensor]) -> None:
    """Load a checkpoint's model weights into a model built from `cfg`; only the frozen modules it loaded from
    disk may be missing from them."""
    missing, unexpected = model.load_state_dict(weights, strict=False)
    prefixes = tuple(frozen_sources(cfg))
    lacking = [k for k in missing if not k.startswith(prefixes)]
    if lacking or unexpected:
        raise UserError(f"checkpoint weights do not fit the run's model: missing {lacking[:3]}, "
                        f"unexpected {unexpected[:3]}")
