"""Augmentation for lab leaf photos, built to break PlantVillage's plain-background shortcut.

PlantVillage photographs one leaf on a uniform background, so a model can learn the background
as much as the leaf (Noyan 2022). Three things work against that here:

* a leaf mask, cheap on such photos (colour distance from the border's median colour plus
  saturation, Otsu threshold, morphological clean-up, holes filled), lets a share of training
  leaves be pasted onto real non-leaf photos at varied scale and position;
* outlier exposure (Hendrycks et al. 2019): real photos that are no leaf of ours train towards
  the uniform distribution, so "none of these" has somewhere to go;
* photometric jitter (brightness, contrast, saturation, hue, noise) for field light.

Geometry is the dihedral group (flips, transpose) plus a random crop-and-resize: cheap enough
on two CPU cores that the model, not the input pipeline, sets the pace.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from util import leaf

MIN_LEAF_SHARE = 0.12  # masks covering less (failed segmentation) or more (leaf fills the frame)
MAX_LEAF_SHARE = 0.92  # are not used for compositing


@dataclass(frozen=True)
class AugmentConfig:
    """What the training pipeline varies, and how much; the model card lists these values."""

    composite_share: float = 0.35  # training leaves pasted onto a real non-leaf photo
    outlier_share: float = 0.10  # batch share of non-leaf photos with a uniform target
    zoom_in: float = 0.75  # smallest crop side, as a share of the image (plain photos)
    leaf_scale: tuple[float, float] = (0.55, 1.0)  # pasted leaf side, as a share of the frame
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.25
    hue: float = 0.04
    noise: float = 6.0  # standard deviation of added pixel noise (0-255 scale), on half the images
    aspect_jitter: float = 0.0  # crop aspect ratio up to exp(±this): field copies were stretched to square
    blur_share: float = 0.0  # share of images blurred (a 5x5 Gaussian of random strength): phone focus

    def describe(self) -> list[str]:
        return [
            "flips and transpose (any of the 8 right-angle orientations)",
            f"random crop of {100 * self.zoom_in:.0f}-100% of the side, resized back",
            f"{100 * self.composite_share:.0f}% of leaves cut out by their mask and pasted at "
            f"{100 * self.leaf_scale[0]:.0f}-{100 * self.leaf_scale[1]:.0f}% of the frame onto real non-leaf photos",
            f"{100 * self.outlier_share:.0f}% of each batch: non-leaf photos with a uniform target (outlier exposure)",
            f"brightness ±{self.brightness:g}, contrast ±{self.contrast:g}, saturation ±{self.saturation:g}, "
            f"hue ±{self.hue:g}, pixel noise up to sd {self.noise:g} on half the images",
            f"crop aspect ratio jittered by up to x{np.exp(self.aspect_jitter):.2f}; "
            f"{100 * self.blur_share:.0f}% of images blurred (Gaussian, sigma 0.3-1.5 px)",
        ]


def _otsu(values: np.ndarray) -> int:
    """Threshold that best separates a uint8 histogram into two classes."""
    hist = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    p = hist / hist.sum()
    omega = np.cumsum(p)
    mu = np.cumsum(p * np.arange(256))
    between = (mu[-1] * omega - mu) ** 2 / np.maximum(omega * (1 - omega), 1e-12)
    return int(np.argmax(between))


def _dilate(mask: np.ndarray) -> np.ndarray:
    """Grow a boolean mask by one pixel in the 4 directions."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return grown


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Leaf = everything the background, flooding in from the border, cannot reach."""
    background = ~mask
    reached = np.zeros_like(mask)
    reached[0], reached[-1], reached[:, 0], reached[:, -1] = (
        background[0],
        background[-1],
        background[:, 0],
        background[:, -1],
    )
    while True:
        grown = _dilate(reached) & background
        if np.array_equal(grown, reached):
            return ~reached
        reached = grown


def leaf_mask(rgb: np.ndarray, work_size: int = 64) -> np.ndarray:
    """Return a boolean mask of the leaf in a lab photo (one leaf on a near-uniform background).

    Computed at ``work_size`` pixels and scaled back: masks only need to be roughly right.
    """
    small = np.asarray(Image.fromarray(rgb).resize((work_size, work_size), Image.BILINEAR))
    x = small.astype(np.float32)
    border = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])
    distance = np.sqrt(((x - np.median(border, axis=0)) ** 2).sum(-1))
    saturation = np.asarray(Image.fromarray(small).convert("HSV"))[..., 1].astype(np.float32)
    score = np.clip(distance + 0.5 * saturation, 0, 255).astype(np.uint8)
    mask = Image.fromarray(((score > _otsu(score)) * 255).astype(np.uint8))
    mask = mask.filter(ImageFilter.MaxFilter(5)).filter(ImageFilter.MinFilter(5))  # close gaps in the outline
    mask = mask.filter(ImageFilter.MinFilter(3)).filter(ImageFilter.MaxFilter(3))  # drop specks
    filled = _fill_holes(np.asarray(mask) > 127)
    size = rgb.shape[1], rgb.shape[0]
    return np.asarray(Image.fromarray(filled.astype(np.uint8) * 255).resize(size, Image.BILINEAR)) > 127


def leaf_masks(pixels: np.ndarray) -> np.ndarray:
    """Masks (N x S x S x 1, uint8 0/1) for compositing; all zeros where segmentation looks unreliable."""
    masks = np.zeros((*pixels.shape[:3], 1), np.uint8)
    for i, rgb in enumerate(pixels):
        mask = leaf_mask(rgb)
        if MIN_LEAF_SHARE <= mask.mean() <= MAX_LEAF_SHARE:
            masks[i, ..., 0] = mask
    return masks


def composite_onto(pixels: np.ndarray, masks: np.ndarray, backgrounds: np.ndarray, seed: int) -> np.ndarray:
    """Paste each masked leaf, scaled to 70% of the frame at a random place, onto a background (numpy).

    The deterministic twin of the training-time composite: it builds the field-photo proxy set
    from validation leaves and held-out backgrounds.
    """
    rng = np.random.default_rng(seed)
    size = pixels.shape[1]
    out = np.empty_like(pixels)
    for i, (rgb, mask) in enumerate(zip(pixels, masks, strict=True)):
        canvas = Image.fromarray(backgrounds[rng.integers(len(backgrounds))])
        side = int(size * 0.7)
        x0, y0 = rng.integers(0, size - side + 1, size=2)
        # A leaf without a usable mask pastes as a tile with its own background.
        alpha = mask[..., 0] * 255 if mask.any() else np.full((size, size), 255, np.uint8)
        paste_at = (int(x0), int(y0))
        canvas.paste(Image.fromarray(rgb).resize((side, side)), paste_at, Image.fromarray(alpha).resize((side, side)))
        out[i] = np.asarray(canvas)
    return out


def field_proxy_images(leaves: np.ndarray, backgrounds: np.ndarray, seed: int) -> np.ndarray:
    """Leaves pasted onto photos never trained on: the stand-in for field photos we do not have."""
    return composite_onto(leaves, leaf_masks(leaves), backgrounds, seed)


def make_augmenter(config: AugmentConfig, backgrounds: np.ndarray, seed: int):
    """Return a tf.data map function: (uint8 pixels, uint8 mask, soft target) batch -> (scaled pixels, target)."""
    import tensorflow as tf

    bg = tf.constant(backgrounds)  # K x S x S x 3 uint8, real photos with no leaf of ours
    generator = tf.random.Generator.from_seed(seed)

    def per_image(shape_batch, low, high):
        return generator.uniform([shape_batch, 1, 1, 1], low, high)

    def dihedral(x):
        n = tf.shape(x)[0]
        x = tf.where(generator.uniform([n, 1, 1, 1]) < 0.5, tf.reverse(x, [2]), x)
        x = tf.where(generator.uniform([n, 1, 1, 1]) < 0.5, tf.reverse(x, [1]), x)
        return tf.where(generator.uniform([n, 1, 1, 1]) < 0.5, tf.transpose(x, [0, 2, 1, 3]), x)

    def boxes(n, composite):
        """Crop boxes: zoom in on plain photos; shrink and move pasted leaves (outside the box is background)."""
        crop = generator.uniform([n], config.zoom_in, 1.0)
        stretch = tf.exp(generator.uniform([n], -config.aspect_jitter, config.aspect_jitter))
        crop_hw = tf.minimum(1.0, tf.stack([crop * stretch, crop / stretch], axis=1))  # height, width
        crop_offset = generator.uniform([n, 2]) * (1.0 - crop_hw)
        leaf_side = generator.uniform([n], *config.leaf_scale)
        box_side = 1.0 / leaf_side  # a box larger than the image shrinks it
        paste_offset = -generator.uniform([n, 2]) * (box_side - 1.0)[:, None]
        side = tf.where(composite[:, None], tf.stack([box_side, box_side], axis=1), crop_hw)
        offset = tf.where(composite[:, None], paste_offset, crop_offset)
        return tf.concat([offset, offset + side], axis=1)  # y1, x1, y2, x2

    taps = tf.range(-2.0, 3.0)

    def blur(x):
        """Blur ``blur_share`` of the images with a separable 5x5 Gaussian of random sigma."""
        n = tf.shape(x)[0]
        sigma = generator.uniform([n, 1], 0.3, 1.5)
        kernel = tf.exp(-0.5 * (taps[None, :] / sigma) ** 2)
        kernel = kernel / tf.reduce_sum(kernel, axis=1, keepdims=True)  # n x 5
        chosen = generator.uniform([n, 1]) < config.blur_share
        kernel = tf.where(chosen, kernel, tf.one_hot(tf.fill([n], 2), 5))  # identity for the rest

        def along(images, k, axis):
            padded = tf.pad(
                images,
                [[0, 0], [2, 2], [0, 0], [0, 0]] if axis == 1 else [[0, 0], [0, 0], [2, 2], [0, 0]],
                mode="REFLECT",
            )
            size = tf.shape(images)[axis]
            shifted = [padded[:, i : i + size] if axis == 1 else padded[:, :, i : i + size] for i in range(5)]
            return tf.add_n([s * k[:, i, None, None, None] for i, s in enumerate(shifted)])

        return along(along(x, kernel, 1), kernel, 2)

    def augment(pixels, mask, target):
        n = tf.shape(pixels)[0]
        size = tf.shape(pixels)[1]
        x = dihedral(tf.concat([tf.cast(pixels, tf.float32), tf.cast(mask, tf.float32)], axis=-1))
        composite = (generator.uniform([n]) < config.composite_share) & (tf.reduce_max(x[..., 3], axis=[1, 2]) > 0)
        x = tf.image.crop_and_resize(x, boxes(n, composite), tf.range(n), tf.stack([size, size]))
        rgb, alpha = x[..., :3], x[..., 3:]
        background = tf.cast(tf.gather(bg, generator.uniform([n], 0, len(backgrounds), tf.int32)), tf.float32)
        background = dihedral(background)
        pasted = alpha * rgb + (1.0 - alpha) * background
        x = tf.where(composite[:, None, None, None], pasted, rgb)
        if config.blur_share > 0:
            x = blur(x)
        # Photometric jitter, one draw per image.
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        x = (x - mean) * per_image(n, 1 - config.contrast, 1 + config.contrast) + mean
        x = x + 255.0 * per_image(n, -config.brightness, config.brightness)
        gray = tf.reduce_mean(x, axis=-1, keepdims=True)
        x = (x - gray) * per_image(n, 1 - config.saturation, 1 + config.saturation) + gray
        x = tf.image.adjust_hue(tf.clip_by_value(x, 0.0, 255.0) / 255.0, generator.uniform([], -config.hue, config.hue))
        noisy = generator.uniform([n, 1, 1, 1]) < 0.5
        noise = generator.normal(tf.shape(x)) * generator.uniform([n, 1, 1, 1], 0.0, config.noise / 255.0)
        x = tf.where(noisy, x + noise, x)
        return leaf.scale_pixels(tf.clip_by_value(x, 0.0, 1.0) * 255.0), target

    return augment
