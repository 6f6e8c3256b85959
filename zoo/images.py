"""Decoding and resizing encoded images (JPEG, PNG, WebP, ...) for classification.

Resizing follows the Keras examples (``keras.utils.load_img(path, target_size=...)``): the
whole image, converted to RGB, resized to the model's input size without cropping, with
nearest-neighbour sampling (``load_img``'s default). Dimensions are checked from the header,
before any pixel is decoded, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from zoo.errors import InvalidArgument

MIN_SIDE = 8
# What Classify decodes: the formats the README promises. Others (TIFF, BMP, ICO, GIF ...)
# are refused rather than handed to more of Pillow's decoders.
FORMATS = ("JPEG", "PNG", "WEBP")
# One request decodes at most this many times ``max_image_pixels`` in all, checked from the
# headers before any pixel is decoded: 20 copies of a 35 KB 6000x6000 PNG cost 95 MB and
# seconds of CPU each before this check.
REQUEST_PIXELS_FACTOR = 4


def _open(data: bytes, where: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InvalidArgument(f"{where} is empty; expected JPEG, PNG or WebP bytes")
    try:
        return Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as e:
        raise InvalidArgument(f"{where} refused as a possible decompression bomb ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise InvalidArgument(
            f"{where} ({len(data)} bytes, starting {data[:8].hex()}) is not a JPEG, PNG or WebP "
            "image"
        ) from None


def declared_pixels(images: list[bytes], max_pixels: int) -> int:
    """Pixels the images' headers declare, in all; InvalidArgument past the request's cap.

    Reads headers only: nothing is decoded.
    """
    total = 0
    for i, data in enumerate(images):
        with _open(data, f"image {i}") as image:
            width, height = image.size
        _check_size(f"image {i}", width, height, max_pixels)
        total += width * height
    limit = REQUEST_PIXELS_FACTOR * max_pixels
    if total > limit:
        raise InvalidArgument(
            f"the {len(images)} images declare {total:,} pixels in all; one request decodes at "
            f"most {limit:,}: send fewer or smaller images"
        )
    return total


def _check_size(where: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise InvalidArgument(
            f"{where} is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}"
        )
    if min(width, height) < MIN_SIDE:
        raise InvalidArgument(
            f"{where} is {width}x{height}; expected at least {MIN_SIDE}x{MIN_SIDE} pixels"
        )


def decode_image(data: bytes, size: tuple[int, int], max_pixels: int, index: int = 0) -> np.ndarray:
    """One encoded image -> uint8 RGB array of ``size`` (height, width).

    Raises:
        InvalidArgument: not a JPEG, PNG or WebP image, too small, or over ``max_pixels``.
    """
    from PIL import Image

    where = f"image {index}"
    with _open(data, where) as image:
        width, height = image.size
        _check_size(where, width, height, max_pixels)
        try:
            rgb = image.convert("RGB")
        except (OSError, SyntaxError, ValueError) as e:
            raise InvalidArgument(
                f"{where} ({len(data)} bytes, {image.format}) could not be decoded: {e}; "
                "expected a complete file"
            ) from None
        except Image.DecompressionBombError as e:
            raise InvalidArgument(
                f"{where} refused as a possible decompression bomb ({e}); "
                f"this server decodes at most {max_pixels:,} pixels"
            ) from None
        resized = rgb.resize((size[1], size[0]), Image.Resampling.NEAREST)
        return np.asarray(resized, dtype=np.uint8)
