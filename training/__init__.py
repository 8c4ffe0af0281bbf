"""Training-time code: datasets, augmentation, evaluation, batch-norm recalibration, the model card.

Imported by train.py, evaluate.py and bench/ only. The server never imports this package (nor
TensorFlow or matplotlib through it); tests/test_layout.py checks that.
"""
