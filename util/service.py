"""The diagnosis service without HTTP: one model, one engine, one batcher per process."""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass

import numpy as np

from util import leaf
from util.batcher import Batcher, BatchObserver
from util.config import Settings
from util.engine import create_engine
from util.model import find_artifact

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Diagnosis:
    label: str
    confidence: float
    top_k: list[leaf.Prediction]
    species: str
    condition: str
    healthy: bool
    model: dict[str, str]

    def to_json(self) -> dict:
        return asdict(self)


class LeafDoctor:
    """Load the model once, warm it up in the background and diagnose uploads through the batcher."""

    def __init__(self, settings: Settings, observe_batch: BatchObserver | None = None):
        self.settings = settings
        self.artifact = find_artifact(settings.model_dir)
        self.engine = create_engine(self.artifact, settings)
        self.input_size = self.engine.input_size
        self.labels = self.artifact.labels
        self.model_info = {"name": self.artifact.name, "version": self.artifact.version}
        self.ready = threading.Event()
        self.batcher = Batcher(
            self.engine.predict,
            (self.input_size, self.input_size, 3),
            settings.max_batch_size,
            settings.max_wait_ms,
            observe_batch,
            before_first=self._warm_up,
        )
        log.info(
            "model %s %s (%s, %d labels, %d px) on %s/%s",
            self.artifact.name,
            self.artifact.version,
            self.artifact.kind,
            len(self.labels),
            self.input_size,
            self.engine.name,
            self.engine.precision,
        )

    def _warm_up(self) -> None:
        """Run every batch size once before /health says ok.

        The engine prepares (and keeps) memory per batch shape; doing all of them now makes the
        first requests fast and the worker's memory flat from then on.
        """
        size = self.input_size
        for batch_size in range(1, self.settings.max_batch_size + 1):
            self.engine.predict(np.zeros((batch_size, size, size, 3), np.float32))
        self.ready.set()
        log.info("warm-up done: ready")

    def preprocess(self, data: bytes) -> np.ndarray:
        """Decode and preprocess an upload; raises leaf.ImageError for anything unreadable."""
        return leaf.load_pixels(data, self.input_size, max_pixels=self.settings.max_pixels)

    def diagnose(self, data: bytes, top_k: int) -> Diagnosis:
        probabilities = self.batcher.predict(self.preprocess(data), self.settings.request_timeout_s)
        return self.describe(probabilities, top_k)

    def describe(self, probabilities: np.ndarray, top_k: int) -> Diagnosis:
        ranked = leaf.top_k(probabilities, self.labels, top_k)
        best = ranked[0]
        species, condition = leaf.split_label(best.label)
        return Diagnosis(
            label=best.label,
            confidence=best.confidence,
            top_k=ranked,
            species=species,
            condition=condition,
            healthy=leaf.is_healthy(best.label),
            model=self.model_info,
        )

    def close(self) -> None:
        self.batcher.close()
