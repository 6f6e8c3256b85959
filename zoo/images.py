"""Decoding and resizing encoded images (JPEG, PNG, WebP, ...) for classification.

Resizing follows the Keras examples (``keras.utils.load_img(path, target_size=...)``): the
whole image, converted to RGB, resized to the model's input size without cropping, with
nearest-neighbour sampling (``load_img``'s default). Dimensions are checked from the header,
before any pixel is decoded, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import io

import numpy as np

from zoo.errors import InvalidArgument

MIN_SIDE = 8


def decode_image(data: bytes, size: tuple[int, int], max_pixels: int, index: int = 0) -> np.ndarray:
    """One encoded image -> uint8 RGB array of ``size`` (height, width).

    Raises:
        InvalidArgument: not a decodable image, too small, or over ``max_pixels``.
    """
    from PIL import Image, UnidentifiedImageError

    where = f"image {index}"
    if not data:
        raise InvalidArgument(f"{where} is empty; expected JPEG, PNG or WebP bytes")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidArgument(
                    f"{where} is {width}x{height} = {width * height:,} pixels; the limit is "
                    f"{max_pixels:,}"
                )
            if min(width, height) < MIN_SIDE:
                raise InvalidArgument(
                    f"{where} is {width}x{height}; expected at least {MIN_SIDE}x{MIN_SIDE} pixels"
                )
            rgb = image.convert("RGB")
            resized = rgb.resize((size[1], size[0]), Image.Resampling.NEAREST)
            return np.asarray(resized, dtype=np.uint8)
    except InvalidArgument:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        head = data[:8].hex()
        raise InvalidArgument(
            f"{where} ({len(data)} bytes, starting {head}) could not be decoded: {e}; "
            "expected a complete JPEG, PNG or WebP file"
        ) from None
    except Image.DecompressionBombError as e:
        raise InvalidArgument(
            f"{where} refused as a possible decompression bomb ({e}); "
            f"this server decodes at most {max_pixels:,} pixels"
        ) from None
