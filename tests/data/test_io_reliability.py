"""Image and mask reading: mask rules, EXIF orientation, float images, the pixel limit."""

import numpy as np
import pytest
from PIL import Image

from hmfss.data import io
from hmfss.errors import HmfssError


@pytest.fixture()
def blob():
    arr = np.zeros((20, 30), np.uint8)
    arr[5:15, 8:20] = 1
    return arr


@pytest.fixture(autouse=True)
def default_limit():
    yield
    io.set_max_pixels(io.DEFAULT_MAX_PIXELS)


def test_palette_mask_of_0_and_255_is_binary(tmp_path, blob):
    # what PIL's convert("P") gives for a 0/255 mask: the object has palette index 255
    Image.fromarray(blob * 255, "L").convert("P").save(tmp_path / "m.png")
    assert Image.open(tmp_path / "m.png").mode == "P"
    assert set(np.unique(np.array(Image.open(tmp_path / "m.png")))) == {0, 255}
    mask, ignore = io.read_mask_and_ignore(tmp_path / "m.png")
    assert np.array_equal(mask, blob) and ignore is None


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "I;16"])
def test_0_255_masks_in_any_mode_are_binary(tmp_path, blob, mode):
    img = Image.fromarray(blob * 255, "L").convert(mode) if mode != "I;16" else Image.fromarray(
        blob.astype(np.uint16) * 65535)
    img.save(tmp_path / "m.png")
    assert np.array_equal(io.read_mask(tmp_path / "m.png"), blob)


def test_voc_style_palette_mask_has_255_as_ignore(tmp_path, blob):
    label = blob * 3
    label[4, :] = 255  # boundary ring beside class index 3
    pal = Image.fromarray(label, "L").convert("P")
    pal.putpalette([v for i in range(256) for v in (i, i, i)])
    pal.save(tmp_path / "voc.png")
    mask, ignore = io.read_mask_and_ignore(tmp_path / "voc.png")
    expected = blob.copy()
    expected[4, :] = 0
    assert np.array_equal(mask, expected)
    assert ignore is not None and ignore.sum() == 30 and ignore[4].all()


def test_exif_rotated_jpeg_is_read_in_displayed_orientation(tmp_path):
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :10] = (250, 0, 0)  # a red band at the stored left edge
    stored[:10, 10:] = (0, 0, 250)  # a blue block top right
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(stored).save(tmp_path / "r.jpg", exif=exif, quality=100)
    img = io.read_image(tmp_path / "r.jpg")
    assert img.size == (20, 40)  # displayed: 20 wide, 40 high
    shown = np.asarray(img).astype(int)
    expected = np.rot90(stored, k=-1).astype(int)  # clockwise
    assert np.abs(shown - expected).mean() < 8
    assert shown[2, 10, 0] > 200 and shown[30, 15, 2] > 200  # red on top, blue on the right


def test_exif_rotation_applies_to_masks_too(tmp_path, blob):
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.fromarray(blob * 255, "L").save(tmp_path / "m.png", exif=exif)
    assert np.array_equal(io.read_mask(tmp_path / "m.png"), np.rot90(blob, k=1))


def test_float_tiff_in_0_1_is_not_black(tmp_path):
    ramp = np.tile(np.linspace(0, 1, 16, dtype=np.float32), (8, 1))
    Image.fromarray(ramp, "F").save(tmp_path / "f.tif")
    rgb = np.asarray(io.read_image(tmp_path / "f.tif"))
    assert rgb.shape == (8, 16, 3)
    assert np.array_equal(rgb[..., 0], np.round(ramp * 255).astype(np.uint8))


def test_float_tiff_wide_range_is_stretched_and_nan_refused(tmp_path):
    values = np.tile(np.linspace(-1000, 3000, 5, dtype=np.float32), (2, 1))
    Image.fromarray(values, "F").save(tmp_path / "w.tif")
    assert np.asarray(io.read_image(tmp_path / "w.tif"))[0, :, 0].tolist() == [0, 64, 128, 191, 255]
    values[0, 0] = np.nan
    Image.fromarray(values, "F").save(tmp_path / "n.tif")
    with pytest.raises(HmfssError, match="n.tif holds NaN"):
        io.read_image(tmp_path / "n.tif")


def test_pixel_limit_refuses_before_decoding(tmp_path):
    Image.new("L", (200, 100)).save(tmp_path / "big.png")
    io.set_max_pixels(19_999)
    with pytest.raises(HmfssError, match=r"big.png is 200x100 = 20000 pixels, over the pixel limit of 19999"):
        io.read_image(tmp_path / "big.png")
    io.set_max_pixels(20_000)
    assert io.read_image(tmp_path / "big.png").size == (200, 100)


def test_pixel_limit_beyond_pils_own_bomb_limit(tmp_path):
    # 15000 x 15000 = 225 M pixels: PIL itself refuses it with DecompressionBombError
    Image.new("1", (15000, 15000)).save(tmp_path / "bomb.png")
    with pytest.raises(HmfssError, match="bomb.png is over the pixel limit of 50000000"):
        io.read_image(tmp_path / "bomb.png")
    with pytest.raises(HmfssError, match="max-pixels must be a positive integer"):
        io.set_max_pixels(0)


def test_jpeg_draft_decodes_at_a_reduced_scale(tmp_path):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (400, 800, 3), np.uint8)).save(tmp_path / "l.jpg")
    assert io.read_image(tmp_path / "l.jpg", draft=(100, 50)).size == (100, 50)
    assert io.read_image(tmp_path / "l.jpg", draft=(150, 50)).size == (200, 100)
    assert io.read_image(tmp_path / "l.jpg").size == (800, 400)


def test_header_size_is_the_displayed_size(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 20)).save(tmp_path / "r.jpg", exif=exif)
    assert io.check_image_file(tmp_path / "r.jpg") == (20, 40)


def test_reader_decodes_large_jpegs_at_a_reduced_scale_with_full_masks(tmp_path):
    from hmfss.data.readers import FolderReader

    rng = np.random.default_rng(2)
    (tmp_path / "cat" / "images").mkdir(parents=True)
    (tmp_path / "cat" / "masks").mkdir()
    Image.fromarray(rng.integers(0, 255, (600, 1000, 3), np.uint8)).save(tmp_path / "cat" / "images" / "a.jpg")
    mask = np.zeros((600, 1000), np.uint8)
    mask[100:300, 200:700] = 255
    Image.fromarray(mask).save(tmp_path / "cat" / "masks" / "a.png")
    reader = FolderReader(tmp_path)
    assert reader.load("cat/a.jpg", 0).image.size == (1000, 600)
    reader.draft = (200, 200)
    sample = reader.load("cat/a.jpg", 0)
    assert sample.image.size == (500, 300)  # 1/2 scale; 1/4 would be under 200 high
    assert sample.size == (600, 1000) and np.array_equal(sample.mask, mask // 255)
