"""Image grids and PNG files."""

import io
from typing import Sequence, Union

import numpy as np
from PIL import Image

from glow_tf.rundir import atomic_write

__all__ = ["make_grid", "png_bytes", "save_png", "load_image"]


def make_grid(rows: Union[Sequence[np.ndarray], np.ndarray], gutter: int = 2, background: int = 255) -> np.ndarray:
  """Lays out images in a grid with small gutters.

  Args:
    rows: list of uint8 arrays `[N_i, H, W, C]`, one per row (rows may be
      shorter than the longest), or one array `[R, N, H, W, C]`.
    gutter: pixels between images and around the border.
    background: gutter intensity, 0..255.

  Returns:
    uint8 `[rows * (H + gutter) + gutter, cols * (W + gutter) + gutter, C]`
    with `C` 1 or 3 (grayscale kept as one channel).
  """
  rows = [np.asarray(r) for r in rows]
  if not rows or any(r.ndim != 4 for r in rows):
    raise ValueError("make_grid: expected a list of [N, H, W, C] arrays.")
  h, w, c = rows[0].shape[1:]
  cols = max(r.shape[0] for r in rows)
  grid = np.full([len(rows) * (h + gutter) + gutter, cols * (w + gutter) + gutter, c],
                 background, np.uint8)
  for i, row in enumerate(rows):
    for j, image in enumerate(row):
      y, x = gutter + i * (h + gutter), gutter + j * (w + gutter)
      grid[y:y + h, x:x + w] = image
  return grid


def png_bytes(image: np.ndarray) -> bytes:
  """A uint8 `[height, width, 1 or 3]` image encoded as PNG."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f"png_bytes: expected uint8, got {image.dtype}.")
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  return buffer.getvalue()


def save_png(path: str, image: np.ndarray) -> str:
  """Writes a uint8 `[height, width, 1 or 3]` image to `path` as PNG, atomically."""
  return atomic_write(path, png_bytes(image))


def load_image(path: str, image_shape: Sequence[int]) -> np.ndarray:
  """Reads an image file as uint8 `[H, W, C]`, centre-cropped and resized to `image_shape`.

  Raises:
    ValueError: when the file cannot be read as an image.
  """
  h, w, c = image_shape
  try:
    with Image.open(path) as im:
      im = im.convert("L" if c == 1 else "RGB")
      side = min(im.size)
      left, top = (im.size[0] - side) // 2, (im.size[1] - side) // 2
      im = im.crop((left, top, left + side, top + side)).resize((w, h), Image.BICUBIC)
      array = np.asarray(im, np.uint8)
  except (OSError, ValueError) as e:
    raise ValueError(f"cannot read image file {path!r}: {e}") from e
  return array.reshape(h, w, c)
