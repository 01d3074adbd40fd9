"""World v2: deterministic by (seed, index), independent of the batch, different from v1, objects painted where
the scene says, and the counter-based stream uniform."""

import numpy as np

from study.config import load_config
from study.data.counter_rng import stream_key, uniforms
from study.data.world import World, shape_mask
from study.data.world_v2 import WorldV2
from study.data.worlds import build_world


def v2(*overrides):
    return build_world(load_config("tiny", ["data.world_version=2", "data.max_objects=4", "data.image_size=32",
                                           *overrides]).data)


def test_v2_is_deterministic_batch_independent_and_a_new_world():
    world = v2()
    assert isinstance(world, WorldV2) and type(build_world(load_config("tiny").data)) is World
    images, scenes = world.batch(np.arange(10, 74))
    again, _ = v2().batch(np.arange(73, 9, -1))
    assert np.array_equal(images, again[::-1])
    for i in (0, 17, 63):
        image, scene = world.sample(10 + i)
        assert np.array_equal(images[i], image) and scenes[i] == scene
    v1 = World(load_config("tiny", ["data.max_objects=4", "data.image_size=32"]).data)
    assert not np.array_equal(v1.batch(np.arange(10, 74))[0], images)
    assert not np.array_equal(v2("data.world_seed=1").batch(np.arange(10, 74))[0], images)


def test_v2_paints_each_object_in_its_cell_with_its_colour():
    world = v2("data.texture_strength=0")
    images, scenes = world.batch(np.arange(200))
    for image, scene in zip(images, scenes, strict=True):
        for obj in scene.objects:
            row, col = divmod(obj.cell, 3)
            patch = image[row * 32 // 3:(row + 1) * 32 // 3, col * 32 // 3:(col + 1) * 32 // 3]
            assert np.isclose(patch, world_colour(obj.colour)).all(-1).any(), (scene, obj)


def world_colour(index):
    from study.data.world import RGB

    return RGB[index]


def test_sprite_table_matches_the_shape_masks():
    world = v2("data.object_scale=1.3")
    s = 32
    for shape in range(5):
        for size, r in enumerate((0.12, 0.19)):
            dy, dx = world.yy - 12.5, world.xx - 20.5
            expected = shape_mask(shape, dy, dx, np.float32(r * s * 1.3))
            assert np.array_equal(world.sprites[shape, size, 12, 20], expected)


def test_counter_stream_is_uniform_and_keyed():
    key = stream_key(0, 1)
    u = uniforms(key, np.arange(1000), 100)
    assert u.shape == (1000, 100) and u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.002
    assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.1
    assert np.array_equal(uniforms(key, np.arange(5, 10), 100), u[5:10])
    assert not np.array_equal(uniforms(stream_key(0, 2), np.arange(5), 100), u[:5])
    f32 = uniforms(key, np.arange(100), 64, np.float32)
    assert f32.dtype == np.float32 and f32.min() >= 0 and f32.max() < 1


def test_v2_captions_follow_v1s_rule_on_the_same_draws():
    world = v2("data.caption_coverage=0.5")
    indices = np.arange(300)
    u, _ = world._batch_draws(indices)
    scenes = world._scenes(indices, u)
    assert [world._caption(s.objects, u[i]) for i, s in enumerate(scenes)] == [s.caption for s in scenes]
    assert len({s.caption for s in scenes}) > 50
