"""The miniature world: images of a few objects on a meaningless texture, and partial captions.

Everything is a pure function of (world seed, index): the world is infinite and deterministic.
Only the objects carry meaning (shape, colour, size, 3x3 location); the background texture is
high-frequency detail that a pixel objective must spend capacity on.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class Obj:
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
    index: int
    objects: tuple[Obj, ...]
    caption: tuple[str, ...]


def count_words(n: int) -> list[str]:
    return ["there", "are", NUMBERS[n - 1], "objects", "."]


class World:
    """A deterministic procedural dataset of (image, caption, ground truth)."""

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        s = cfg.image_size
        grid = (np.arange(s, dtype=np.float32) + 0.5)
        self.yy, self.xx = np.meshgrid(grid, grid, indexing="ij")

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.cfg.world_seed, index])

    def scene(self, index: int) -> Scene:
        return self._draw(index, self._rng(index))[0]

    def _draw(self, index: int, rng: np.random.Generator) -> tuple[Scene, np.random.Generator]:
        cfg = self.cfg
        n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        cells = rng.choice(9, size=n, replace=False)
        kinds = rng.choice(len(SHAPES) * len(COLOURS), size=n, replace=False)  # distinct (shape, colour)
        sizes = rng.integers(0, 2, size=n)
        objects = tuple(Obj(int(k) // len(COLOURS), int(k) % len(COLOURS), int(z), int(c))
                        for k, z, c in zip(kinds, sizes, cells, strict=True))
        return Scene(index, objects, self._caption(objects, rng)), rng

    def _caption(self, objects: tuple[Obj, ...], rng: np.random.Generator) -> tuple[str, ...]:
        """Name round(coverage * n) objects (at least one), each attribute kept with p = coverage."""
        cov = self.cfg.caption_coverage
        words = count_words(len(objects)) if rng.random() < cov else []
        k = max(1, round(cov * len(objects)))
        for i in rng.permutation(len(objects))[:k]:
            keep = rng.random(3) < cov
            words += objects[i].words(size=keep[0], colour=keep[1], location=keep[2])
        return tuple(words)

    def sample(self, index: int) -> tuple[np.ndarray, Scene]:
        """The image (H, W, 3) float32 in [0, 1] and the scene of world index `index`."""
        scene, rng = self._draw(index, self._rng(index))
        return self._render(scene.objects, rng), scene

    def _render(self, objects: tuple[Obj, ...], rng: np.random.Generator) -> np.ndarray:
        s = self.cfg.image_size
        image = self._background(rng)
        cell = s / 3
        jitter = rng.uniform(-0.12, 0.12, size=(len(objects), 2)) * cell
        for obj, (jy, jx) in zip(objects, jitter, strict=True):
            cy = (obj.cell // 3 + 0.5) * cell + jy
            cx = (obj.cell % 3 + 0.5) * cell + jx
            mask = shape_mask(obj.shape, self.yy - cy, self.xx - cx, RADIUS[obj.size] * s)
            image[mask] = RGB[obj.colour]
        return image

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        """Grey with a faint tint, plus stripes of random frequency and per-pixel noise."""
        s, amp = self.cfg.image_size, self.cfg.texture_strength
        base = 0.45 + rng.uniform(-0.1, 0.1) + rng.uniform(-0.04, 0.04, size=3).astype(np.float32)
        fy, fx = rng.uniform(0.8, 2.5, size=2) * rng.choice([-1, 1], size=2)
        stripes = np.sin(fy * self.yy + fx * self.xx + rng.uniform(0, 2 * np.pi))
        noise = rng.standard_normal((s, s), dtype=np.float32)
        grey = amp * (0.25 * stripes + 0.25 * noise)
        image = base[None, None, :] + grey[:, :, None]
        return np.clip(image, 0.0, 1.0).astype(np.float32)


def shape_mask(shape: int, dy: np.ndarray, dx: np.ndarray, r: float) -> np.ndarray:
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
