"""What the peer frameworks of bench/peers.py wrap: this project's model, pixel pipeline and engine.

A user who picks LitServe or BentoML instead of this service would write about this much: load the
model directory, decode with ``util.leaf``, run ``util.engine`` on a batch, judge the batch with
``util.domain`` and answer the top labels. The peers get the same help the service has (warm-up of
every batch size, one BLAS thread for the verdict), so a ratio measures the serving around the
engine, not a handicap.
"""

from __future__ import annotations

import os

import numpy as np
from threadpoolctl import threadpool_limits

from util import leaf
from util.config import Settings
from util.domain import DomainCheck
from util.engine import create_engine
from util.labels import top_k
from util.model_dir import find_artifact

MAX_BATCH_SIZE = 32  # as the LitServe app
BATCH_TIMEOUT_S = 0.005
TOP_K = 3


class PeerModel:
    """Load once; ``pixels`` per upload, ``answer`` per batch."""

    def __init__(self, max_batch_size: int = MAX_BATCH_SIZE):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        self.settings = Settings.from_env()
        artifact = find_artifact(self.settings.model_dir)
        self.engine = create_engine(artifact, self.settings)
        self.domain = DomainCheck.for_artifact(artifact, self.engine.precision)
        self.labels = artifact.labels
        self.model = {"name": artifact.name, "version": artifact.version}
        self.size = self.engine.input_size
        threadpool_limits(limits=1, user_api="blas")
        for batch_size in range(1, max_batch_size + 1):
            self.engine.predict(np.zeros((batch_size, self.size, self.size, 3), np.float32))

    def pixels(self, data: bytes) -> np.ndarray:
        return leaf.load_pixels(data, self.size, max_pixels=self.settings.max_pixels)

    def answer(self, batch: np.ndarray) -> list[dict]:
        """One JSON-ready answer per row of ``batch``: top labels and the in-domain verdict."""
        outputs = self.engine.predict(batch)
        verdicts = self.domain.judge(outputs["logits"], outputs["features"])
        answers = []
        for probabilities, verdict in zip(outputs["probabilities"], verdicts, strict=True):
            ranked = top_k(probabilities, self.labels, TOP_K)
            answers.append(
                {
                    "label": ranked[0].label,
                    "confidence": ranked[0].confidence,
                    "top_k": [{"label": p.label, "confidence": p.confidence} for p in ranked],
                    "in_domain": {"known": verdict.known, "score": verdict.score},
                    "model": self.model,
                }
            )
        return answers
