"""The naive baseline: the original PlantNet API's design, for bench/serve.py to compare against.

One sync gunicorn worker, Pillow decode, ``tf.image.resize``, ``x / 127.5 - 1`` and an eager
Keras ``model(x)`` call per request. Same model and labels as the service; not for production.
"""

from __future__ import annotations

import io

import keras
import numpy as np
import tensorflow as tf
from flask import Flask, jsonify, request
from PIL import Image

from util.config import Settings

MODEL_DIR = Settings.from_env().model_dir  # PLANTNET_MODEL_DIR, like the service's
model = keras.saving.load_model(MODEL_DIR / "model.keras", compile=False)
labels = (MODEL_DIR / "labels.txt").read_text().split("\n")
size = int(model.input_shape[1])
app = Flask(__name__)


@app.get("/health")
def health():
    return {"status": "ok"}


@app.post("/Diagnosis/prediction")
def predict():
    image = Image.open(io.BytesIO(request.files["image"].read())).convert("RGB")
    pixels = tf.image.resize(np.asarray(image, np.float32), [size, size]) / 127.5 - 1.0
    probabilities = model(pixels[None], training=False)[0].numpy()
    best = int(np.argmax(probabilities))
    return jsonify(label=labels[best], confidence=float(probabilities[best]))
