"""After training: recalibrate batch norm, evaluate, calibrate the in-domain verdict, write the model directory.

Every number the model card shows is measured here (or read from the run's own logs) and
passed to util.training.card; nothing in the card is typed by hand.
"""

from __future__ import annotations

import csv
import json
import logging
import platform
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

from util import model as model_dir
from util.domain import METHOD, DomainStatistics
from util.training import card, ood
from util.training.augment import field_proxy_images
from util.training.dataset import class_counts
from util.training.evaluation import Evaluation, plot_confusion, plot_history, plot_scores, run_engine
from util.training.recalibrate import recalibrate_batch_norm
from util.training.soup import describe, weighted_average

log = logging.getLogger("train")
DEFAULT_OUTLIER_GROUPS = ("far", "near", "background")


@dataclass(frozen=True)
class Candidate:
    name: str
    model: object  # the float32 serving model (probabilities out)
    before: float
    after: float
    field_proxy: float | None = None
    verdict: float | None = None  # share of the selection's unknown photos its trial verdict rejects


def serving_model(trained, input_size: int, num_classes: int):
    """A float32 copy of the trained network with a softmax on its logits: what the service loads."""
    import keras

    from train import make_model

    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        logits_model = make_model(input_size, num_classes)
        logits_model.set_weights(trained.get_weights())
        probabilities = keras.layers.Softmax(name="probabilities")(logits_model.output)
        return keras.Model(logits_model.input, probabilities, name=logits_model.name)
    finally:
        keras.mixed_precision.set_global_policy(policy)


def engine_for(model):
    """The same traced (probabilities, logits, features) function the OpenVINO export converts."""
    from util.engine import OUTPUT_NAMES, serving_function

    function = serving_function(model, int(model.input_shape[1]))
    return lambda batch: dict(zip(OUTPUT_NAMES, (t.numpy() for t in function(batch)), strict=True))


def top1(model, pixels: np.ndarray, targets: np.ndarray) -> float:
    outputs = run_engine(engine_for(model), pixels)
    return float(np.mean(outputs["probabilities"].argmax(1) == targets))


def selection_set(config, data) -> np.ndarray:
    """Unknown photos that choose (a candidate, the distance weight) but never judge the verdict in a report."""
    return ood.selection_unknowns(data.outliers, data.pixels[data.train_idx], config.seed)


def verdict_strength(model, data, unknown_pixels: np.ndarray, seed: int) -> float:
    """How much of the selection set a candidate's verdict would reject, fitted on a sample of training images."""
    engine = engine_for(model)
    sample = np.random.default_rng(seed).permutation(data.train_idx)[: ood.VERDICT_SAMPLE]
    train_out = run_engine(engine, data.pixels[sample])
    val_out = run_engine(engine, data.pixels[data.val_idx])
    stats = ood.fit_statistics(
        train_out["logits"], train_out["features"], data.dataset.targets[sample], val_out["logits"], val_out["features"]
    )
    _, trials = ood.choose_distance_weight(stats, val_out, run_engine(engine, unknown_pixels))
    return max(trial.rejected for trial in trials)


def pick(candidates: list[Candidate]) -> Candidate:
    """The best validation top-1 among candidates whose verdict is within ood.VERDICT_TOLERANCE of the strongest."""
    verdicts = [c.verdict for c in candidates if c.verdict is not None]
    floor = max(verdicts) - ood.VERDICT_TOLERANCE if verdicts else 0.0
    eligible = [c for c in candidates if c.verdict is None or c.verdict >= floor]
    return max(eligible, key=lambda c: (c.after, c.verdict or 0.0))


def interpolate(start, end, weight: float) -> list[np.ndarray]:
    """Weights ``weight`` of the way from ``start`` to ``end`` (WiSE-FT, Wortsman et al. 2022): a fine-tune's
    robustness gains with less of its loss on the original distribution."""
    return weighted_average([start, end], [1 - weight, weight])


def same_weights(a, b) -> bool:
    """Whether two models of one architecture hold identical weights."""
    return all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights(), strict=True))


def candidate_sources(config, trained) -> dict:
    """The last epoch, the best-checkpointed epoch and, for a fine-tune, the halfway point from its start;
    with --finish-from, only the given weights."""
    import keras

    if config.finish_from is not None:
        return {f"given weights ({config.finish_from.name})": trained}
    sources = {"last epoch": trained}
    best_path = config.work_dir / "best.keras"
    if best_path.exists():
        best = keras.saving.load_model(best_path, compile=False)
        if same_weights(best, trained):  # scoring it again would cost minutes and add a duplicate row
            sources = {"last epoch (also the best)": trained}
        else:
            sources["best epoch"] = best
    if config.init_from is not None:
        start = keras.saving.load_model(config.init_from, compile=False)
        halfway = keras.models.clone_model(trained)
        halfway.set_weights(interpolate(start, trained, 0.5))
        sources["halfway from the starting weights to the last epoch"] = halfway
    return sources


def choose_candidate(config, data, trained) -> tuple[Candidate, list[Candidate]]:
    """Recalibrate batch norm of every candidate; keep the most accurate one whose verdict holds; report all."""
    classes = len(data.dataset.labels)
    val_pixels, val_targets = data.pixels[data.val_idx], data.dataset.targets[data.val_idx]
    proxy_pixels = field_proxy_set(data, config.seed)  # built once: the same images judge every candidate
    sources = candidate_sources(config, trained)
    unknown_pixels = selection_set(config, data) if len(sources) > 1 else None
    candidates = []
    for name, source in sources.items():
        model = serving_model(source, config.input_size, classes)
        before = top1(model, val_pixels, val_targets)
        recalibrate_batch_norm(model, data.pixels[data.train_idx], config.seed)
        after = top1(model, val_pixels, val_targets)
        proxy = None if proxy_pixels is None else top1(model, proxy_pixels, val_targets)
        verdict = None if unknown_pixels is None else verdict_strength(model, data, unknown_pixels, config.seed)
        log.info(
            "%s: validation top-1 %.4f before, %.4f after batch-norm recalibration; field proxy %s; verdict %s",
            name,
            before,
            after,
            proxy,
            verdict,
        )
        candidates.append(Candidate(name, model, before, after, proxy, verdict))
    return pick(candidates), candidates


def outlier_groups(config, data) -> dict[str, np.ndarray]:
    """Held-out non-leaf photos by folder, plus synthetic ones: never trained on."""
    from util.training import dataset as ds

    groups: dict[str, np.ndarray] = {}
    if config.outliers:
        _, held_out = ds.split_outliers(ds.list_images(config.outliers))
        for folder in DEFAULT_OUTLIER_GROUPS:
            paths = [p for p in held_out if p.parent.name == folder]
            if paths:
                groups[f"{folder} (held out)"] = ds.load_pixels(paths, config.input_size, config.work_dir / "cache")
    excluded = [p for p in ds.list_images(config.data) if p.parent.name in data.dataset.excluded]
    if excluded:
        groups["classes left out"] = ds.load_pixels(excluded, config.input_size)
    groups.update(synthetic_groups(data.pixels[data.val_idx], config.seed))
    return groups


def synthetic_groups(leaves: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    return {f"{name} (synthetic)": images for name, images in ood.synthetic_outliers(leaves, 40, seed).items()}


@dataclass(frozen=True)
class Calibration:
    stats: DomainStatistics
    threshold: float
    scores: dict[str, np.ndarray]  # group name -> in-domain scores; "validation (known)" first
    weight_trials: list[ood.WeightTrial]


def calibrate(model, data, groups: dict[str, np.ndarray], unknown_pixels: np.ndarray) -> Calibration:
    """Fit the in-domain statistics on training images, the distance weight on the selection set and the
    threshold on validation; report every group."""
    engine = engine_for(model)
    train_out = run_engine(engine, data.pixels[data.train_idx])
    val_out = run_engine(engine, data.pixels[data.val_idx])
    stats = ood.fit_statistics(
        train_out["logits"],
        train_out["features"],
        data.dataset.targets[data.train_idx],
        val_out["logits"],
        val_out["features"],
    )
    stats, trials = ood.choose_distance_weight(stats, val_out, run_engine(engine, unknown_pixels))
    log.info("distance weight %g of %s", stats.distance_weight, [t.as_dict() for t in trials])
    known = stats.scores(val_out["logits"], val_out["features"])
    scores = {"validation (known)": known}
    for name, pixels in groups.items():
        out = run_engine(engine, pixels)
        scores[name] = stats.scores(out["logits"], out["features"])
    return Calibration(stats, ood.threshold_for(known), scores, trials)


def field_proxy_set(data, seed: int) -> np.ndarray | None:
    """Validation leaves pasted onto held-out non-leaf photos (a stand-in for field photos); None without them."""
    if not len(data.held_out_outliers):
        return None
    return field_proxy_images(data.pixels[data.val_idx], data.held_out_outliers, seed)


def read_history(work_dir: Path) -> list[dict]:
    path = work_dir / "history.csv"
    if not path.exists():
        return []
    with path.open() as stream:
        return list(csv.DictReader(stream))


def training_record(command: str, history: list[dict]) -> dict:
    """How a model directory's weights were trained, for model.json: a soup's recipe repeats it (soup.py)."""
    seconds = [float(h["seconds"]) for h in history if h.get("seconds")]
    return {"command": command, "epochs_run": len(history), "minutes": round(sum(seconds) / 60, 1)}


def finish(config, data, trained) -> Path:
    """Write the model directory, its evaluation, calibration, pictures and model card."""
    chosen, candidates = choose_candidate(config, data, trained)
    out = config.out
    labels = data.dataset.labels
    version = date.today().isoformat()
    history = read_history(config.work_dir)
    metadata = {"name": model_dir.MODEL_NAME, "version": version, "input_size": config.input_size}
    if config.finish_from is None and history:
        metadata["training"] = training_record(config.command, history)
    model_dir.save_model_dir(out, chosen.model, labels, metadata)

    engine = engine_for(chosen.model)
    val_targets = data.dataset.targets[data.val_idx]
    evaluation = Evaluation(labels, val_targets, run_engine(engine, data.pixels[data.val_idx])["probabilities"])
    summary = evaluation.summary()
    groups = outlier_groups(config, data)
    calibration = calibrate(chosen.model, data, groups, selection_set(config, data))
    calibration.stats.save(out / model_dir.DOMAIN_FILE)
    threshold, scores = calibration.threshold, calibration.scores
    known = scores["validation (known)"]
    domain_report = [
        ood.report_group(name, known, values, threshold, name.startswith("validation")).as_dict()
        for name, values in scores.items()
    ]
    model_dir.update_metadata(
        out,
        in_domain={
            "method": METHOD,
            "threshold": threshold,
            "target_acceptance": ood.TARGET_ACCEPTANCE,
            "calibrated_on": f"validation split, {len(known)} images",
            "distance_weight": calibration.stats.distance_weight,
        },
    )
    proxy = {} if chosen.field_proxy is None else {"images": len(data.val_idx), "top1": chosen.field_proxy}
    (out / model_dir.EVALUATION_FILE).write_text(
        json.dumps(
            {
                **summary,
                "split": "validation",
                "in_domain": domain_report,
                "distance_weight_trials": [t.as_dict() for t in calibration.weight_trials],
                "field_proxy": proxy,
                "candidates": [
                    {
                        "name": c.name,
                        "top1_before": c.before,
                        "top1": c.after,
                        "field_proxy": c.field_proxy,
                        "verdict_selection_rejected": c.verdict,
                    }
                    for c in candidates
                ],
            },
            indent=1,
        )
    )
    low, high = summary["top1_interval_95"]
    plot_confusion(
        evaluation.confusion(),
        labels,
        out / "confusion_matrix.png",
        f"Validation split, {len(val_targets)} images: top-1 {100 * summary['top1']:.1f}% "
        f"(95% CI {100 * low:.1f}-{100 * high:.1f})",
    )
    if history:
        plot_history(history, out / "training_curve.png")
    plot_scores(scores, threshold, out / "in_domain_scores.png")
    facts = card.CardFacts(
        config=config,
        version=version,
        labels=labels,
        excluded=data.dataset.excluded,
        train_counts=dict(class_counts(data.dataset, data.train_idx)),
        n_train=len(data.train_idx),
        n_outliers_train=len(data.outliers),
        evaluation=evaluation,
        candidate=(chosen.name, chosen.before, chosen.after),
        candidates=[(c.name, c.before, c.after, c.field_proxy, c.verdict) for c in candidates],
        history=history,
        parameters=chosen.model.count_params(),
        domain_report=domain_report,
        threshold=threshold,
        weight_trials=calibration.weight_trials,
        distance_weight=calibration.stats.distance_weight,
        target_acceptance=ood.TARGET_ACCEPTANCE,
        field_proxy=proxy,
        machine=_machine(),
        origin="" if config.finish_from is None else describe(config.finish_from),
    )
    (out / model_dir.CARD_FILE).write_text(card.render(facts), encoding="utf-8")
    log.info("wrote %s: validation top-1 %.4f", out, summary["top1"])
    return out


def _machine() -> str:
    import os

    cores = len(os.sched_getaffinity(0))
    return f"{platform.machine()}, {cores} CPU core{'' if cores == 1 else 's'}, no GPU"
