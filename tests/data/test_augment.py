"""Photometric augmentation: every op against hand-computed values, probabilities, order,
determinism, and its use by the episode dataset (training images only, masks untouched)."""

from dataclasses import asdict

import numpy as np
import pytest
import torch

from hmfss.data import augment as A
from hmfss.errors import HmfssError
from hmfss.heads.recipe import PhotometricAugmentation
from helpers import one_thread  # noqa: F401  (autouse fixture)


def img(*pixels, h=1):
    """(3, h, n/h) uint8 image from RGB triples, row-major."""
    arr = torch.tensor(pixels, dtype=torch.uint8).view(h, -1, 3)
    return arr.permute(2, 0, 1).contiguous()


def gray(values):
    """(3, H, W) uint8 image with R = G = B = values."""
    t = torch.tensor(values, dtype=torch.uint8)
    return t.expand(3, *t.shape).contiguous()


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_posterize_keeps_the_top_bits():
    x = gray([[0b10110111, 0b00001111, 255]])
    assert A.posterize(x, 4)[0].tolist() == [[0b10110000, 0, 0b11110000]]
    assert A.posterize(x, 1)[0].tolist() == [[0b10000000, 0, 0b10000000]]
    assert torch.equal(A.posterize(x, 8), x)
    assert A.posterize(x, 0).sum() == 0


def test_solarize_inverts_from_the_threshold_on():
    x = gray([[0, 127, 128, 200, 255]])
    assert A.solarize(x, 128)[0].tolist() == [[0, 127, 127, 55, 0]]
    assert torch.equal(A.solarize(x, 256), x)


def test_to_gray_uses_the_fixed_point_luma_weights():
    # (4899 R + 9617 G + 1868 B + 8192) >> 14, i.e. 0.299 / 0.587 / 0.114 rounded
    x = img((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (10, 20, 30))
    out = A.to_gray(x)
    assert out[0].tolist() == [[76, 150, 29, 255, 18]]
    assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])


def test_equalize_two_levels_become_black_and_white():
    x = gray([[50, 50, 90], [90, 90, 90]])
    assert A.equalize(x)[0].tolist() == [[0, 0, 255], [255, 255, 255]]
    # three levels: 2 px at 10, 1 at 20, 1 at 30 -> 0, round(1 * 255 / 2) = 128 (half to even), 255
    y = gray([[10, 10, 20, 30]])
    assert A.equalize(y)[0].tolist() == [[0, 0, 128, 255]]
    # a constant channel stays; channels are equalised separately
    z = torch.stack([torch.full((2, 2), 7, dtype=torch.uint8), torch.tensor([[1, 2], [2, 2]], dtype=torch.uint8),
                     torch.tensor([[0, 0], [0, 9]], dtype=torch.uint8)])
    assert A.equalize(z).tolist() == [[[7, 7], [7, 7]], [[0, 255], [255, 255]], [[0, 0], [0, 255]]]


def test_brightness_contrast_formula_truncates():
    x = gray([[0, 100, 200]])
    # floor(clip(v * 1.5 + 0.1 * 255)): 25.5 -> 25, 175.5 -> 175, 325.5 -> 255
    assert A.brightness_contrast(x, 1.5, 0.1)[0].tolist() == [[25, 175, 255]]
    # 100 * 0.5 - 51 < 0 -> 0
    assert A.brightness_contrast(x, 0.5, -0.2)[0].tolist() == [[0, 0, 49]]


def test_sharpen_kernel_and_reflect_101_borders():
    # constant image: the kernel sums to 1 - a + a * l
    flat = gray(torch.full((4, 4), 100).tolist())
    assert A.sharpen(flat, 0.5, 1.0)[0].unique().tolist() == [100]
    assert A.sharpen(flat, 0.4, 0.5)[0].unique().tolist() == [80]
    # a = 0.5, l = 1: centre weight 0.5 + 0.5 * 9 = 5, the 8 neighbours -0.5
    x = torch.full((5, 5), 100)
    x[2, 2] = 120
    out = A.sharpen(gray(x.tolist()), 0.5, 1.0)[0]
    assert out[2, 2] == 120 * 5 - 0.5 * 8 * 100  # 200
    assert out[1, 2] == out[1, 1] == 100 * 5 - 0.5 * (7 * 100 + 120)  # 90
    assert out[0, 0] == 100
    # bright pixel in the corner: reflect-101 does not repeat it across the border (reflect would give 80)
    y = torch.full((4, 4), 100)
    y[0, 0] = 120
    out = A.sharpen(gray(y.tolist()), 0.5, 1.0)[0]
    assert out[0, 0] == 200 and out[0, 1] == 90 and out[1, 0] == 90


def test_color_jitter_pieces():
    x = gray([[15, 200, 240]])
    assert A.adjust_brightness(x, 1.1)[0].tolist() == [[16, 220, 255]]  # 16.5 -> 16, 264 -> 255
    # contrast around the mean luma (here 100): v * 0.5 + 50
    y = gray([[0, 200]])
    assert A.adjust_contrast(y, 0.5)[0].tolist() == [[50, 150]]
    assert A.adjust_contrast(y, 0.0)[0].tolist() == [[100, 100]]
    # saturation: v * f + luma * (1 - f), luma(100, 50, 0) = 59
    z = img((100, 50, 0))
    assert A.adjust_saturation(z, 2.0)[:, 0, 0].tolist() == [141, 41, 0]
    assert A.adjust_saturation(z, 0.0)[:, 0, 0].tolist() == [59, 59, 59]
    # hue: a third of a turn takes red to green, half a turn to cyan; grays have no hue
    red = img((255, 0, 0), (128, 128, 128))
    assert A.adjust_hue(red, 1 / 3)[:, 0, 0].tolist() == [0, 255, 0]
    assert A.adjust_hue(red, 0.5)[:, 0, 0].tolist() == [0, 255, 255]
    assert A.adjust_hue(red, -1 / 6)[:, 0, 0].tolist() == [255, 0, 255]
    assert A.adjust_hue(red, 0.3)[:, 0, 1].tolist() == [128, 128, 128]


def test_hsv_round_trip():
    rgb = torch.rand(3, 8, 8, generator=gen(1), dtype=torch.float64)
    assert torch.allclose(A.hsv_to_rgb(A.rgb_to_hsv(rgb)), rgb, atol=1e-12)


def test_p0_changes_nothing_and_p1_applies_every_op_in_order():
    x = torch.randint(0, 256, (3, 6, 7), generator=gen(2), dtype=torch.uint8)
    params = PhotometricAugmentation(p=0.0)
    assert A.photometric_augment(x, params, gen()) is x
    xf = x.float() / 255
    assert A.photometric_augment(xf, params, gen()) is xf
    # order: solarize then posterize of 200 -> 55 -> 48; posterize then solarize -> 192 -> 63
    v = gray([[200]])
    both = PhotometricAugmentation(p=1.0, ops=("solarize", "posterize"))
    assert A.photometric_augment(v, both, gen())[0].tolist() == [[48]]
    reverse = PhotometricAugmentation(p=1.0, ops=("posterize", "solarize"))
    assert A.photometric_augment(v, reverse, gen())[0].tolist() == [[63]]
    # p = 1 with all ops: deterministic ops in a chain equal the functions composed by hand
    fixed = PhotometricAugmentation(p=1.0, ops=("to_gray", "posterize", "equalize", "solarize"))
    expected = A.solarize(A.equalize(A.posterize(A.to_gray(x), 4)), 128)
    assert torch.equal(A.photometric_augment(x, fixed, gen()), expected)
    # float images give the uint8 result in [0, 1]
    assert torch.allclose(A.photometric_augment(xf, fixed, gen()), expected.float() / 255)


def test_probability_is_per_op():
    x = gray([[200]])  # solarize changes it, nothing else does here
    params = PhotometricAugmentation(p=0.2, ops=("solarize",))
    hits = sum(int(A.photometric_augment(x, params, gen(s))[0, 0, 0]) == 55 for s in range(2000))
    assert 0.17 < hits / 2000 < 0.23
    # two ops with p 0.2 each: the fraction with both applied is ~0.04
    params = PhotometricAugmentation(p=0.2, ops=("solarize", "posterize"))
    outcomes = [int(A.photometric_augment(x, params, gen(s))[0, 0, 0]) for s in range(2000)]
    # 200: none; 55: solarize only; 192: posterize only; 48: both
    freq = {v: outcomes.count(v) / 2000 for v in (200, 55, 192, 48)}
    assert abs(freq[48] - 0.04) < 0.015 and abs(freq[200] - 0.64) < 0.04


def test_same_seed_same_image_and_magnitudes_stay_in_range():
    x = torch.randint(0, 256, (3, 16, 12), generator=gen(3), dtype=torch.uint8)
    params = PhotometricAugmentation(p=0.7)
    outs = [A.photometric_augment(x, params, gen(s)) for s in range(8)]
    assert all(torch.equal(o, A.photometric_augment(x, params, gen(s))) for s, o in enumerate(outs))
    assert len({o.numpy().tobytes() for o in outs}) == 8
    assert all(o.dtype == torch.uint8 and o.shape == x.shape for o in outs)
    # brightness/contrast alone: every pixel of a flat 100 image moves by the same amount, within the limits
    bc = PhotometricAugmentation(p=1.0, ops=("brightness_contrast",))
    flat = gray(torch.full((2, 2), 100).tolist())
    values = [int(A.photometric_augment(flat, bc, gen(s))[0, 0, 0]) for s in range(200)]
    low, high = int(100 * 0.8 - 0.2 * 255), int(100 * 1.2 + 0.2 * 255)
    assert low <= min(values) and max(values) <= high and len(set(values)) > 20


@pytest.mark.parametrize("value, message", [
    ({"p": 1.5}, "augmentation p must be in [0, 1]"),
    ({"ops": ["to_gray", "blur"]}, "unknown augmentation op 'blur'"),
    ({"posterize_bits": 9}, "posterize_bits must be an integer in 0..8"),
    ({"sharpen_alpha": [0.5, 0.2]}, "sharpen_alpha must be a range"),
    ({"sharpen_alpha": [0.5]}, "must be a pair of numbers"),
    ({"jitter_hue": 0.7}, "jitter_hue must be in [0, 0.5]"),
    ({"strength": 2}, "unknown augmentation parameter 'strength'"),
    ("strong", "augmentation must be 'none', 'photometric' or a mapping"),
])
def test_bad_parameters_are_one_line_errors(value, message):
    with pytest.raises(HmfssError) as exc:
        A.augmentation_from_config(value)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_config_round_trip():
    assert A.augmentation_from_config("none") is None and A.augmentation_from_config(None) is None
    assert A.augmentation_from_config("photometric") == PhotometricAugmentation()
    stored = A.augmentation_to_config(PhotometricAugmentation(p=0.5))
    assert stored["p"] == 0.5 and stored["sharpen_alpha"] == [0.2, 0.5] and stored["ops"][0] == "to_gray"
    assert A.augmentation_from_config(stored) == PhotometricAugmentation(p=0.5)
    assert A.augmentation_from_config({"ops": "solarize"}).ops == ("solarize",)
    assert A.augmentation_to_config(None) == "none"


# ---- in the episode dataset ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def fss(tmp_path_factory):
    from helpers.tiny_data import make_fss

    return make_fss(tmp_path_factory.mktemp("fss"))


def _dataset(fss, **kw):
    from hmfss.data.dataset import EpisodeDataset
    from hmfss.data.episodes import Episode
    from hmfss.data.readers import make_reader

    cat = fss.categories[0]
    episodes = [Episode(f"{cat}/{q}.jpg", (f"{cat}/{q + 1}.jpg", f"{cat}/{q + 2}.jpg"), 0) for q in (1, 4)]
    return EpisodeDataset(make_reader("fss", fss.datapath), episodes, 16, **kw)


def test_dataset_augments_images_before_resizing_and_leaves_masks(fss):
    from PIL import Image

    from hmfss.data.transforms import image_to_tensor

    params = PhotometricAugmentation(p=1.0, ops=("solarize", "color_jitter"))
    plain = _dataset(fss)
    aug = _dataset(fss, augmentation=params, augment_seeds=[11, 12])
    a, b = plain[1], aug[1]
    for key in ("query_mask", "support_masks", "query_ignore"):
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["query_img"], b["query_img"])
    # by hand: one generator seeded with the episode's seed, query first, then each support
    g = gen(12)
    reader = plain.reader
    ep = plain.episodes[1]
    expected = []
    for name in (ep.query, *ep.supports):
        pixels = torch.from_numpy(np.asarray(reader.load(name, 0).image).copy()).permute(2, 0, 1)
        out = A.photometric_augment(pixels, params, g)
        expected.append(image_to_tensor(Image.fromarray(out.permute(1, 2, 0).numpy()), 16))
    assert torch.equal(b["query_img"], expected[0])
    assert torch.equal(b["support_imgs"], torch.stack(expected[1:]))
    # the global RNG plays no part; p = 0 gives the plain images
    torch.manual_seed(123)
    assert torch.equal(aug[1]["support_imgs"], b["support_imgs"])
    off = _dataset(fss, augmentation=PhotometricAugmentation(p=0.0), augment_seeds=[1, 2])
    assert torch.equal(off[0]["query_img"], plain[0]["query_img"])
    with pytest.raises(ValueError):
        _dataset(fss, augmentation=params, augment_seeds=[1])


def test_dataset_items_do_not_depend_on_the_workers(fss):
    from hmfss.data.dataset import episode_loader

    ds = _dataset(fss, augmentation=PhotometricAugmentation(p=0.6), augment_seeds=[5, 6])
    direct = [ds[i]["query_img"] for i in range(2)]
    loaded = [b["query_img"][0] for b in episode_loader(ds, 1, workers=2)]
    assert all(torch.equal(x, y) for x, y in zip(direct, loaded))


def test_recipe_magnitudes_are_the_documented_defaults():
    # albumentations 1.x defaults the original VAT code relied on: written out explicitly
    assert asdict(PhotometricAugmentation()) == {
        "p": 0.2, "ops": ("to_gray", "posterize", "equalize", "sharpen", "brightness_contrast", "solarize",
                          "color_jitter"),
        "posterize_bits": 4, "sharpen_alpha": (0.2, 0.5), "sharpen_lightness": (0.5, 1.0),
        "brightness_limit": 0.2, "contrast_limit": 0.2, "solarize_threshold": 128,
        "jitter_brightness": 0.2, "jitter_contrast": 0.2, "jitter_saturation": 0.2, "jitter_hue": 0.2,
    }
    assert A.OPS == PhotometricAugmentation().ops
