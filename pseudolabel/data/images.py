"""Image files -> ``(H, W, 3)`` uint8 RGB arrays, with paths kept under the image root."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class ImageLoadError(ValueError):
    """An image file is missing, unreadable, truncated or escapes the image root."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


# Whether a file_name may be a symlink (or lie under one) leading out of the image root. Off by
# default: an annotation file must not make the tools read arbitrary files. A process-wide
# I/O policy, like PIL's MAX_IMAGE_PIXELS; the command line sets it from the config's
# data.follow_symlinks (or check's --follow-symlinks).
_FOLLOW_SYMLINKS = False


def set_follow_symlinks(allow: bool) -> None:
    global _FOLLOW_SYMLINKS
    _FOLLOW_SYMLINKS = bool(allow)


def resolve_image_path(image_root: str | Path, file_name: str) -> Path:
    """Join ``file_name`` to ``image_root``, refusing names that leave the root.

    An absolute name, one whose ``..`` parts climb above the root, or (unless
    ``set_follow_symlinks(True)``) one that resolves through a symlink to a place outside the
    root raises ``ImageLoadError``.
    """
    if not isinstance(file_name, str) or not file_name:
        raise ImageLoadError(f"{image_root}/{file_name!r}", "file_name must be a non-empty string")
    if os.path.isabs(file_name) or Path(file_name).drive:
        raise ImageLoadError(file_name, "absolute file_name is not allowed; give it relative to "
                             f"the image root {image_root}")
    normalised = os.path.normpath(file_name)
    if normalised == ".." or normalised.startswith(".." + os.sep):
        raise ImageLoadError(file_name, f"file_name escapes the image root {image_root}")
    path = Path(image_root) / normalised
    if not _FOLLOW_SYMLINKS:
        root = os.path.realpath(image_root)
        real = os.path.realpath(path)
        if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
            raise ImageLoadError(file_name, f"resolves through a symlink to {real}, outside "
                                 f"the image root {image_root}; set data.follow_symlinks: "
                                 "true in the config (check: --follow-symlinks) to allow it")
    return path


def _to_rgb_uint8(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (or 32-bit int) grayscale: scale the full 16-bit range to 8 bits.
        arr = np.asarray(img, dtype=np.float64)
        arr = np.clip(arr / 257.0, 0, 255).round().astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode == "F":
        arr = np.clip(np.asarray(img, dtype=np.float64), 0, 255).round().astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    # Palette, grayscale, alpha and CMYK modes: PIL's conversion; alpha is dropped.
    return np.array(img.convert("RGB"), dtype=np.uint8)  # writable, so torch can wrap it


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB, upright per its EXIF orientation.

    Handles grayscale, RGBA/LA (alpha dropped), palette, CMYK and 16-bit files. Raises
    ``ImageLoadError`` naming the file for a missing, unreadable or truncated image.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(path, "image file not found")
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb_uint8(img)
    except UnidentifiedImageError:
        raise ImageLoadError(path, "not a readable image file") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(path, f"corrupt or truncated image ({exc})") from None


# Images with more pixels than this are decoded reduced (JPEG by DCT scaling, others by
# averaging blocks) in the stages that run models on them: the models resize to 1,024 px or
# less anyway, and a 10,000 x 10,000 image decoded whole took 9.3 GB through generate.
MAX_PIXELS = 4096 * 4096


def load_image_bounded(path: str | Path, max_pixels: int = MAX_PIXELS
                       ) -> tuple[np.ndarray, tuple[int, int]]:
    """``load_image`` for at most ``max_pixels`` pixels: the array (reduced by an integer
    factor when the file is larger) and the file's full ``(H, W)`` (EXIF rotation applied)."""
    path = Path(path)
    full = image_size(path)
    if full[0] * full[1] <= max_pixels:
        return load_image(path), full
    factor = int(np.ceil(np.sqrt(full[0] * full[1] / max_pixels)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # read reduced
            with Image.open(path) as img:
                w, h = img.size
                img.draft("RGB", (max(1, w // factor), max(1, h // factor)))  # JPEG: cheap
                img.load()
                k = max(1, round(max(img.size[0] / (w / factor), img.size[1] / (h / factor))))
                if k > 1:
                    img = img.reduce(k)
                img = ImageOps.exif_transpose(img)
                return _to_rgb_uint8(img), full
    except UnidentifiedImageError:
        raise ImageLoadError(path, "not a readable image file") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(path, f"corrupt or truncated image ({exc})") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` of an image as ``load_image`` would return it (EXIF rotation applied)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                orientation = img.getexif().get(0x0112, 1)
    except FileNotFoundError:
        raise ImageLoadError(path, "image file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(path, f"not a readable image file ({exc})") from None
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def read_full_image(image_root: str | Path, record: dict) -> tuple[np.ndarray | None, str]:
    """The image of a COCO record at full resolution, or why it cannot be used: unreadable,
    unlike its record's size, or above the pixel budget (refinement works on full-resolution
    masks, so a huge image is not decoded reduced but left out)."""
    try:
        path = resolve_image_path(image_root, record["file_name"])
        h, w = image_size(path)
        if h * w > MAX_PIXELS:
            return None, (f"{record['file_name']} is {w}x{h}, above the {MAX_PIXELS:,}-pixel "
                          "budget; downscale it (its masks are kept as they are)")
        pixels = load_image(path)
    except ValueError as exc:
        return None, str(exc)
    if pixels.shape[:2] != (record["height"], record["width"]):
        return None, (f"{record['file_name']} is {pixels.shape[1]}x{pixels.shape[0]}, its "
                      f"record says {record['width']}x{record['height']}")
    return pixels, ""
