"""Precise batch norm: recompute batch-norm statistics on plain training images after training.

During training the moving averages follow augmented images and lag the moving (and, with EMA,
averaged) weights; inference then normalises with statistics that fit neither (Wu and Johnson
2021, "Rethinking Batch in BatchNorm"). A running mean of the batch statistics of the final
weights over unaugmented images fixes that. Validation images are never used.
"""

from __future__ import annotations

import numpy as np

from util import leaf


def batch_norm_layers(model) -> list:
    import keras

    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def recalibrate_batch_norm(model, pixels: np.ndarray, seed: int, batch_size: int = 64, max_batches: int = 120) -> int:
    """Replace every batch-norm layer's moving statistics with their mean over plain images; return images used."""
    layers = batch_norm_layers(model)
    kept_momentum = [layer.momentum for layer in layers]
    order = np.random.default_rng(seed).permutation(len(pixels))[: batch_size * max_batches]
    batches = [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
    for step, batch in enumerate(batches):
        for layer in layers:
            layer.momentum = step / (step + 1)  # moving = mean of every batch so far
        model(leaf.scale_pixels(pixels[batch].astype(np.float32)), training=True)
    for layer, momentum in zip(layers, kept_momentum, strict=True):
        layer.momentum = momentum
    return len(batches) * batch_size
