"""Decoding for Classify: the image code lives in ``zoo.images``, shared with the job that
evaluates a fine-tuned model, so the test report sees exactly what Classify would decode."""

from zoo.images import FORMATS, MIN_SIDE, REQUEST_PIXELS_FACTOR, declared_pixels, decode_image

__all__ = ["FORMATS", "MIN_SIDE", "REQUEST_PIXELS_FACTOR", "declared_pixels", "decode_image"]
