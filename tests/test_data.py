import json
import shutil

import numpy as np
import pytest
import torch

from vera.data.layout import (
    SampleError,
    check_consistency,
    load_manifest,
    load_sample,
    write_manifest,
    write_sample,
)
from vera.data.synthetic import (
    PATHS,
    SyntheticBuilder,
    build_dataset,
    path_centres,
    render_object,
    vocabulary,
)
from vera.frames import layers


@pytest.fixture(scope="module")
def builder():
    # a small real clip is enough here (the carphone clip scaled to 128 px)
    from vera.data.clips import load_background_clips

    return SyntheticBuilder(load_background_clips(max_frames=40), frames=17, height=64, width=64)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, builder):
    root = tmp_path_factory.mktemp("layered")
    entries = [write_sample(root, builder.sample(7, i, task)) for i in range(2) for task in ("object_addition", "background_change")]
    write_manifest(root, entries)
    return root


def test_builder_samples_satisfy_the_compositing_equation(builder):
    for task in ("object_addition", "background_change"):
        for index in range(3):
            s = builder.sample(3, index, task)
            assert s.source.shape == s.edit.shape == s.composite.shape == (17, 64, 64, 3)
            assert s.alpha.shape == s.mask.shape == (17, 64, 64, 1)
            a = s.alpha.float() / 255
            eq2 = (1 - a) * s.source.float() + a * s.edit.float()
            assert (eq2 - s.composite.float()).abs().max() <= 0.5 + 1e-3  # rounding only
            assert torch.equal(s.composite[(s.alpha == 0).expand_as(s.composite)], s.source[(s.alpha == 0).expand_as(s.source)])
            check_consistency(s)
            edited = (a > 0).float().mean()
            assert 0.02 < edited < 0.98


def test_object_shadow_lives_in_the_alpha():
    rgb, alpha = render_object("circle", (220, 40, 40), "large", path_centres("from left to right", 3, 64, 64), 64, 64)
    solid = alpha > 0.99
    shadow_only = (alpha > 0.2) & (alpha < 0.6) & (rgb.amax(-1, keepdim=True) < 0.05)
    assert solid.any() and shadow_only.sum() > 20  # a semi-transparent black cast shadow beside the object
    centres = path_centres("from left to right", 5, 64, 64)
    assert centres[0][0] < centres[-1][0] and centres[0][1] == centres[-1][1]


def test_builder_is_deterministic_and_seeds_give_held_out_splits(builder):
    a, b = builder.sample(1, 4, "object_addition"), builder.sample(1, 4, "object_addition")
    c = builder.sample(2, 4, "object_addition")
    assert torch.equal(a.composite, b.composite) and a.instruction == b.instruction
    assert not torch.equal(a.composite, c.composite)


def test_instructions_use_the_vocabulary(builder):
    vocab = set(vocabulary())
    for i in range(6):
        for task in ("object_addition", "background_change"):
            assert set(builder.sample(0, i, task).instruction.split()) <= vocab
    assert len(PATHS) == 6


def test_background_change_mask_marks_the_region_that_changes(builder):
    s = builder.sample(5, 0, "background_change")
    alpha, mask = s.alpha.float() / 255, s.mask.float() / 255
    assert ((mask == 1) & (alpha < 1)).sum() == 0  # the coarse mask never covers the subject
    assert (mask == 0).any() and (mask == 1).any()


def test_loader_round_trip_and_edit_fill_rule(dataset, builder):
    entries = load_manifest(dataset)
    assert len(entries) == 4
    s = load_sample(dataset, entries[0])
    original = builder.sample(7, 0, "object_addition")
    assert torch.equal(s.composite, original.composite) and torch.equal(s.alpha, original.alpha)
    f = s.float_layers()
    zero = (f["alpha"] == 0).expand_as(f["edit"])
    blurred = layers.gaussian_blur(f["composite"], 8.0)
    assert torch.equal(f["edit"][zero], blurred[zero])
    assert torch.equal(f["edit"][~zero], (s.edit.float() / 255)[~zero])


def _corrupt(dataset, tmp_path, change):
    root = tmp_path / "bad"
    shutil.copytree(dataset, root)
    entries = load_manifest(root)
    entry = change(root, entries[0]) or entries[0]
    write_manifest(root, [entry] + entries[1:])
    return root, entry


def _drop_frame(root, entry, key="composite"):
    frames = sorted((root / entry[key]).iterdir())
    frames[-1].unlink()


def _paint(root, entry, key, value, frame=3):
    from PIL import Image

    path = sorted((root / entry[key]).iterdir())[frame]
    img = np.array(Image.open(path))
    img[10:20, 10:20] = value
    Image.fromarray(img).save(path)


@pytest.mark.parametrize("change, message", [
    (lambda root, e: shutil.rmtree(root / e["edit"]), "edit path .* does not exist"),
    (lambda root, e: _drop_frame(root, e), "composite has \\(frames, height, width\\) \\(16, 64, 64\\)"),
    (lambda root, e: [_drop_frame(root, e, k) for k in ("source", "edit", "alpha", "composite", "mask")] and None,
     "bad 16 frames \\(Vera needs 1 \\+ 4k frames: trim to 13"),
    (lambda root, e: _paint(root, e, "composite", 255), "composite differs from .* by up to"),
    (lambda root, e: dict(e, task="relighting"), "task 'relighting' is not one of"),
    (lambda root, e: dict(e, instruction="  "), "instruction text is empty"),
])
def test_loader_rejects_bad_samples_by_name(dataset, tmp_path, change, message):
    root, entry = _corrupt(dataset, tmp_path, change)
    with pytest.raises(SampleError, match=message) as err:
        load_sample(root, entry)
    assert f"sample {entry['id']}" in str(err.value)


def test_loader_rejects_coloured_mattes_and_odd_sizes(dataset, tmp_path, builder):
    from PIL import Image

    root, entry = _corrupt(dataset, tmp_path, lambda r, e: None)
    alpha_dir = root / entry["alpha"]
    for p in sorted(alpha_dir.iterdir()):
        grey = np.array(Image.open(p))
        Image.fromarray(np.stack([grey, grey // 2, grey], -1)).save(p)
    with pytest.raises(SampleError, match="alpha must be a grey matte"):
        load_sample(root, entry)
    s = builder.sample(7, 0, "object_addition")
    s.source, s.edit, s.composite, s.alpha, s.mask = (x[:, :56] for x in (s.source, s.edit, s.composite, s.alpha, s.mask))
    with pytest.raises(SampleError, match="multiples of 16"):
        check_consistency(s)


def test_manifest_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest.jsonl"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.jsonl").write_text('{"id": "a"}\n')
    with pytest.raises(SampleError, match="line 1 .*missing task"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.jsonl").write_text("{not json\n")
    with pytest.raises(SampleError, match="line 1: not valid JSON"):
        load_manifest(tmp_path)
    row = dict(id="x", task="object_addition", instruction="i", source="s", edit="e", alpha="a", composite="c")
    (tmp_path / "manifest.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(SampleError, match="'x' appears more than once"):
        load_manifest(tmp_path)


def test_build_dataset_never_overwrites(tmp_path):
    (tmp_path / "manifest.jsonl").write_text("")
    with pytest.raises(FileExistsError, match="already holds a dataset"):
        build_dataset(tmp_path, 1, 0)
