"""The miniature world: images of a few objects on a meaningless texture, and partial captions.

Everything is a pure function of (world seed, index): the world is infinite and deterministic. A run builds its
world once, with `study.data.worlds.build_world`, and hands it to everything that renders images.
Only the objects carry meaning (shape, colour, size, 3x3 location); the background texture is
high-frequency detail that a pixel objective must spend capacity on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from study.config import DataConfig

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLOURS = ("red", "green", "blue", "yellow", "magenta", "cyan")
SIZES = ("small", "large")
LOCATIONS = ("top-left", "top", "top-right", "left", "center", "right", "bottom-left", "bottom", "bottom-right")
NUMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
RGB = np.array([[0.9, 0.1, 0.1], [0.1, 0.8, 0.1], [0.15, 0.25, 0.95],
                [0.95, 0.9, 0.1], [0.9, 0.1, 0.9], [0.1, 0.9, 0.9]], dtype=np.float32)
RADIUS = (0.12, 0.19)  # object radius as a fraction of the image side, by size
HELD_OUT_START = 1 << 40  # training indices lie in [0, D) with D < 2**40; held-out ones from here
PRETRAIN_START = 1 << 41  # encoder-pretraining stages read [PRETRAIN_START, PRETRAIN_START + D): disjoint from both

# the uniforms each index draws, by role (one block, so every image costs one generator call)
_N, _CELLS, _KINDS, _SIZES = 0, slice(1, 10), slice(10, 40), slice(40, 49)
_JITTER, _COUNT, _ORDER, _KEEP, _BACKGROUND = slice(49, 67), 67, slice(68, 77), slice(77, 104), slice(104, 113)
_DRAWS = 113


@dataclass(frozen=True)
class Obj:
    """One object of a scene: shape, colour, size and grid cell."""

    shape: int
    colour: int
    size: int
    cell: int

    def words(self, size: bool = True, colour: bool = True, location: bool = True) -> list[str]:
        out = [SIZES[self.size]] if size else []
        out += [COLOURS[self.colour]] if colour else []
        out.append(SHAPES[self.shape])
        return out + (["at", LOCATIONS[self.cell]] if location else []) + ["."]


@dataclass(frozen=True)
class Scene:
    """One image's ground truth: its objects and caption."""

    index: int
    objects: tuple[Obj, ...]
    caption: tuple[str, ...]


def count_words(n: int) -> list[str]:
    """The caption words that say how many objects a scene has."""
    return ["there", "are", NUMBERS[n - 1], "objects", "."]


class World:
    """A deterministic procedural dataset of (image, caption, ground truth).

    Each index draws a fixed block of uniforms and one noise field from its own generator, keyed
    by (world seed, index); images are then rendered for a whole batch at once with array
    operations that treat every image alike, so an image does not depend on its batch.
    """

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        self.axis = np.arange(cfg.image_size, dtype=np.float32) + 0.5
        self.yy, self.xx = np.meshgrid(self.axis, self.axis, indexing="ij")

    def _draws(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.cfg.world_seed, index])
        s = self.cfg.image_size
        return rng.random(_DRAWS), rng.standard_normal((s, s), dtype=np.float32)

    def scene(self, index: int) -> Scene:
        return self._scenes([index], self._draws(index)[0][None])[0]

    def _scenes(self, indices: Sequence[int] | np.ndarray, u: np.ndarray) -> list[Scene]:
        """The scenes of a batch of indices from their uniforms (B, _DRAWS); row b depends on u[b] only."""
        cfg = self.cfg
        span = cfg.max_objects - cfg.min_objects
        counts = cfg.min_objects + np.minimum((u[:, _N] * (span + 1)).astype(int), span)
        cells = np.argsort(u[:, _CELLS], axis=1)
        kinds = np.argsort(u[:, _KINDS], axis=1)  # distinct (shape, colour) pairs
        large = (u[:, _SIZES] < 0.5).astype(int).tolist()
        kinds, cells = kinds.tolist(), cells.tolist()
        objects = [tuple(Obj(k // len(COLOURS), k % len(COLOURS), z, c)
                         for k, z, c in zip(kinds[b][:n], large[b][:n], cells[b][:n], strict=True))
                   for b, n in enumerate(counts.tolist())]
        captions = self._captions(objects, u)
        return [Scene(int(i), o, c) for i, o, c in zip(indices, objects, captions, strict=True)]

    def _captions(self, objects: list[tuple[Obj, ...]], u: np.ndarray) -> list[tuple[str, ...]]:
        return [self._caption(objs, u[b]) for b, objs in enumerate(objects)]

    def _caption(self, objects: tuple[Obj, ...], u: np.ndarray) -> tuple[str, ...]:
        """Name round(coverage * n) objects (at least one), each attribute kept with p = coverage."""
        cov = self.cfg.caption_coverage
        words = count_words(len(objects)) if u[_COUNT] < cov else []
        k = max(1, round(cov * len(objects)))
        keep = u[_KEEP].reshape(9, 3) < cov
        for i in np.argsort(u[_ORDER][: len(objects)])[:k]:
            words += objects[i].words(size=keep[i, 0], colour=keep[i, 1], location=keep[i, 2])
        return tuple(words)

    def sample(self, index: int) -> tuple[np.ndarray, Scene]:
        """The image (H, W, 3) float32 in [0, 1] and the scene of world index `index`."""
        images, scenes = self.batch([index])
        return images[0], scenes[0]

    def batch(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, list[Scene]]:
        """Images (B, H, W, 3) float32 in [0, 1] (a view of `render`'s) and scenes of the given world indices."""
        images, scenes = self.render(indices)
        return np.moveaxis(images, 1, -1), scenes

    def render(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, list[Scene]]:
        """Images (B, 3, H, W) float32 in [0, 1], channels first as the models take them (no copy to transpose),
        and scenes of the given world indices."""
        indices = np.asarray(indices, dtype=np.int64)
        u, noise = self._batch_draws(indices)
        scenes = self._scenes(indices, u)
        images = self._backgrounds(u, noise)
        self._paint(images, scenes, u)
        return images, scenes

    def _batch_draws(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Uniforms (B, _DRAWS) and noise fields (B, H, W) of `indices`: one generator per index."""
        draws = [self._draws(int(i)) for i in indices]
        return np.stack([d[0] for d in draws]), np.stack([d[1] for d in draws])

    def _backgrounds(self, u: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Grey with a faint tint, plus stripes of random frequency and per-pixel noise."""
        bg = u[:, _BACKGROUND]
        base = (0.35 + 0.2 * bg[:, :1] + 0.08 * (bg[:, 1:4] - 0.5)).astype(np.float32)
        signs = np.where(bg[:, 6:8] < 0.5, -1.0, 1.0)
        freq = (0.8 + 1.7 * bg[:, 4:6]) * signs
        rows = (freq[:, :1] * self.axis).astype(np.float32)
        cols = (freq[:, 1:] * self.axis + 2 * np.pi * bg[:, 8:9]).astype(np.float32)
        sin_r, cos_r, sin_c, cos_c = np.sin(rows), np.cos(rows), np.sin(cols), np.cos(cols)
        stripes = sin_r[:, :, None] * cos_c[:, None, :] + cos_r[:, :, None] * sin_c[:, None, :]  # sin(rows + cols)
        grey = (noise + stripes) * np.float32(0.25 * self.cfg.texture_strength)
        images = grey[:, None] + base[:, :, None, None]  # (B, 3, H, W)
        return np.clip(images, 0.0, 1.0, out=images)

    def _paint(self, images: np.ndarray, scenes: list[Scene], u: np.ndarray) -> None:
        """Draw every object at its cell centre plus jitter: all masks in one call, then their pixels set slot
        by slot (slot k of every image at once), so a later object covers an earlier one."""
        owner, slot, cells, sizes, shapes, colours = np.array(
            [(b, k, o.cell, o.size, o.shape, o.colour)
             for b, sc in enumerate(scenes) for k, o in enumerate(sc.objects)]).T
        cell = self.cfg.image_size / 3
        columns = _JITTER.start + 2 * slot[:, None] + np.arange(2)
        jitter = (u[owner[:, None], columns] - 0.5) * self.cfg.position_jitter * cell
        cy = (cells // 3 + 0.5) * cell + jitter[:, 0]
        cx = (cells % 3 + 0.5) * cell + jitter[:, 1]
        masks = self._object_masks(shapes, sizes, cy, cx).reshape(len(owner), -1)
        planes = images.reshape(len(images), 3, -1)  # a view: images are contiguous (B, 3, H * W)
        for k in range(slot.max() + 1):
            obj, pixel = np.nonzero(masks & (slot == k)[:, None])
            planes[owner[obj], :, pixel] = RGB[colours[obj]]

    def _object_masks(self, shapes: np.ndarray, sizes: np.ndarray, cy: np.ndarray, cx: np.ndarray) -> np.ndarray:
        """Pixel masks (N, H, W) of N objects centred at (cy, cx)."""
        s = self.cfg.image_size
        dy = self.yy[None] - cy[:, None, None].astype(np.float32)
        dx = self.xx[None] - cx[:, None, None].astype(np.float32)
        radius = (np.array(RADIUS)[sizes] * s * self.cfg.object_scale).astype(np.float32)[:, None, None]
        masks = np.zeros((len(shapes), s, s), dtype=bool)
        for shape in np.unique(shapes):
            sel = shapes == shape
            masks[sel] = shape_mask(int(shape), dy[sel], dx[sel], radius[sel])
        return masks

def shape_mask(shape: int, dy: np.ndarray, dx: np.ndarray, r: float | np.ndarray) -> np.ndarray:
    """Pixels inside the shape of radius r centred at offset (dy, dx) = 0 (r broadcasts)."""
    ay, ax = np.abs(dy), np.abs(dx)
    name = SHAPES[shape]
    if name == "circle":
        return dy * dy + dx * dx <= r * r
    if name == "square":
        return np.maximum(ay, ax) <= 0.8 * r
    if name == "diamond":
        return ay + ax <= 1.1 * r
    if name == "triangle":  # apex up, base down
        return (dy >= -r) & (dy <= 0.8 * r) & (ax <= 0.6 * (dy + r))
    return ((ax <= 0.3 * r) & (ay <= r)) | ((ay <= 0.3 * r) & (ax <= r))  # cross
