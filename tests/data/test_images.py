import numpy as np
import pytest
from PIL import Image

from pseudolabel.data.images import ImageLoadError, image_size, load_image, resolve_image_path


def _save(tmp_path, name, img, **kw):
    path = tmp_path / name
    img.save(path, **kw)
    return path


def test_modes_become_rgb_uint8(tmp_path):
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 200
    cases = {
        "gray.png": Image.fromarray(np.full((4, 6), 77, np.uint8)),           # L
        "rgba.png": Image.fromarray(np.dstack([rgb, np.full((4, 6), 9, np.uint8)])),  # RGBA
        "palette.png": Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE),
        "la.png": Image.fromarray(np.full((4, 6), 77, np.uint8)).convert("LA"),
        "rgb.jpg": Image.fromarray(rgb),
    }
    for name, img in cases.items():
        arr = load_image(_save(tmp_path, name, img))
        assert arr.shape == (4, 6, 3) and arr.dtype == np.uint8, name
    assert load_image(tmp_path / "gray.png")[0, 0].tolist() == [77, 77, 77]
    assert load_image(tmp_path / "rgba.png")[0, 0].tolist() == [200, 0, 0]
    assert load_image(tmp_path / "palette.png")[0, 0].tolist() == [200, 0, 0]


def test_16bit_scaled_to_8bit(tmp_path):
    arr16 = np.array([[0, 65535], [257 * 100, 257 * 200]], dtype=np.uint16)
    path = _save(tmp_path, "deep.png", Image.fromarray(arr16))
    out = load_image(path)
    assert out[..., 0].tolist() == [[0, 255], [100, 200]]


def test_exif_rotation_applied(tmp_path):
    arr = np.zeros((4, 6, 3), np.uint8)
    arr[0, 0] = 255  # top-left marker
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = _save(tmp_path, "rot.jpg", img, exif=exif, quality=100)
    out = load_image(path)
    assert out.shape == (6, 4, 3)
    assert image_size(path) == (6, 4)
    assert out[0, -1].max() > 150  # the marker is now at the top-right


def test_missing_corrupt_and_truncated_files(tmp_path):
    with pytest.raises(ImageLoadError, match="not found") as e:
        load_image(tmp_path / "nope.png")
    assert "nope.png" in str(e.value)
    (tmp_path / "junk.png").write_bytes(b"this is not an image")
    with pytest.raises(ImageLoadError, match="junk.png: not a readable image"):
        load_image(tmp_path / "junk.png")
    good = _save(tmp_path, "big.png", Image.fromarray(
        np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)))
    data = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="cut.png: corrupt or truncated"):
        load_image(tmp_path / "cut.png")


@pytest.mark.parametrize("name", [
    "../x.jpg",         # climbs out of the root
    "a/../../x.jpg",    # climbs out after normalising
    "/etc/passwd",      # absolute
])
def test_names_escaping_the_root_are_refused(tmp_path, name):
    with pytest.raises(ImageLoadError, match="absolute|escapes"):
        resolve_image_path(tmp_path, name)


def test_names_inside_the_root_resolve(tmp_path):
    assert resolve_image_path(tmp_path, "a/../b/x.jpg") == tmp_path / "b" / "x.jpg"
