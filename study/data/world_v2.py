"""World v2 (`data.world_version: 2`): the v1 world's objects, captions and painter, drawn from a counter-based
random stream for the whole batch at once.

v1 seeds one numpy generator per image (1.3 ms of a 64-image batch's 5 ms render); here every uniform is a
hash of (world seed, stream, index, draw), computed batch-wide, and the background noise is uniform (unit
variance, like v1's normal). So the images of an index differ from v1's: v2 is a new world, calibrated with its
own preset (`cpu-v2`; `data.object_scale` and the texture make shape learnable). An image still depends only on
(world seed, index), never on its batch.
"""

from __future__ import annotations

import numpy as np

from study.config import DataConfig
from study.data.counter_rng import stream_key, uniforms
from study.data.world import _COUNT, _DRAWS, _KEEP, _ORDER, RADIUS, SHAPES, Obj, World, count_words, shape_mask

SCENE_STREAM, NOISE_STREAM = 1, 2
UNIT_VARIANCE = np.float32(12 ** 0.5)  # a uniform on [-0.5, 0.5) times this has variance 1


class WorldV2(World):
    """The corrected world: calibrated objects on whole pixels, rendered batch-wide from counter-based streams."""

    def __init__(self, cfg: DataConfig):
        super().__init__(cfg)
        self.scene_key = stream_key(cfg.world_seed, SCENE_STREAM)
        self.noise_key = stream_key(cfg.world_seed, NOISE_STREAM)
        self.sprites = self._sprites()

    def _sprites(self) -> np.ndarray:
        """Boolean masks (shape, size, centre row, centre column, H, W) of every object an image can hold:
        v2 centres objects on whole pixels, so painting is a table lookup."""
        s = self.cfg.image_size
        centres = np.arange(s, dtype=np.float32) + 0.5
        dy = self.yy[None, :, :] - centres[:, None, None]  # (row, H, W)
        dx = self.xx[None, :, :] - centres[:, None, None]  # (column, H, W)
        table = np.zeros((len(SHAPES), len(RADIUS), s, s, s, s), dtype=bool)
        for shape in range(len(SHAPES)):
            for size, r in enumerate(RADIUS):
                radius = np.float32(r * s * self.cfg.object_scale)
                table[shape, size] = shape_mask(shape, dy[:, None], dx[None, :], radius)
        return table

    def _draws(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        u, noise = self._batch_draws(np.array([index]))
        return u[0], noise[0]

    def _batch_draws(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.cfg.image_size
        u = uniforms(self.scene_key, indices, _DRAWS)
        noise = (uniforms(self.noise_key, indices, s * s, np.float32) - np.float32(0.5)) * UNIT_VARIANCE
        return u, noise.reshape(len(indices), s, s)

    def _captions(self, objects: list[tuple[Obj, ...]], u: np.ndarray) -> list[tuple[str, ...]]:
        """v1's caption rule (round(coverage * n) objects named, at least one, in the order of their draws; each
        attribute kept with p = coverage), its comparisons made for the whole batch at once."""
        cov, b = self.cfg.caption_coverage, len(objects)
        counts = np.array([len(o) for o in objects])
        say_count = (u[:, _COUNT] < cov).tolist()
        keep = (u[:, _KEEP].reshape(b, 9, 3) < cov).tolist()
        order = np.argsort(np.where(np.arange(9) < counts[:, None], u[:, _ORDER], 2.0), axis=1).tolist()
        named = np.maximum(1, np.round(cov * counts)).astype(int).tolist()
        captions = []
        for i, objs in enumerate(objects):
            words = count_words(len(objs)) if say_count[i] else []
            for j in order[i][:named[i]]:
                words += objs[j].words(*keep[i][j])
            captions.append(tuple(words))
        return captions

    def _object_masks(self, shapes: np.ndarray, sizes: np.ndarray, cy: np.ndarray, cx: np.ndarray) -> np.ndarray:
        """Pixel masks (N, H, W) of N objects, their centres rounded down to a whole pixel: a sprite lookup."""
        last = self.cfg.image_size - 1
        return self.sprites[shapes, sizes, np.clip(cy.astype(int), 0, last), np.clip(cx.astype(int), 0, last)]
