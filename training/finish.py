"""After training: recalibrate batch norm, evaluate, calibrate the in-domain verdict, write the model directory.

Every number the model card shows is measured here (or read from the run's own logs) and
passed to training.card; nothing in the card is typed by hand.
"""

from __future__ import annotations

import csv
import json
import logging
import platform
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import date
from pathlib import Path

import numpy as np

from training import card, crop_hint, ood, report, verdict
from training.augment import field_proxy_images
from training.data import class_counts
from training.evaluation import Evaluation, plot_confusion, plot_history, plot_scores, run_engine
from training.recalibrate import recalibrate_batch_norm
from training.soup import describe, weighted_average
from util import model_dir
from util.domain import METHOD, DomainCheck, DomainStatistics, HintPoint

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
    field: float | None = None  # top-1 on the field calibration photos (None without field photos)


def serving_model(trained, input_size: int, num_classes: int):
    """A float32 copy of the trained network with a softmax on its logits: what the service loads."""
    import keras

    from training.recipe import make_model

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


LAB_TOLERANCE = 0.015  # a candidate this far below the best lab top-1 can still win on field photos


def pick(candidates: list[Candidate]) -> Candidate:
    """Among candidates whose verdict is within ood.VERDICT_TOLERANCE of the strongest: with field photos, the
    best on them among those within LAB_TOLERANCE of the best lab top-1; without, the best lab top-1."""
    verdicts = [c.verdict for c in candidates if c.verdict is not None]
    floor = max(verdicts) - ood.VERDICT_TOLERANCE if verdicts else 0.0
    eligible = [c for c in candidates if c.verdict is None or c.verdict >= floor]
    if all(c.field is not None for c in eligible):
        best_lab = max(c.after for c in eligible)
        eligible = [c for c in eligible if c.after >= best_lab - LAB_TOLERANCE]
        return max(eligible, key=lambda c: (c.field, c.after))
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
    field_idx = data.field.calibration_idx
    field_pixels, field_targets = data.field.pixels[field_idx], data.field.targets[field_idx]
    sources = candidate_sources(config, trained)
    unknown_pixels = selection_set(config, data) if len(sources) > 1 else None
    candidates = []
    recalibration_pixels = np.concatenate([data.pixels[data.train_idx], data.field.pixels[data.field.train_idx]])
    for name, source in sources.items():
        model = serving_model(source, config.input_size, classes)
        before = top1(model, val_pixels, val_targets)
        before_field = top1(model, field_pixels, field_targets) if len(field_idx) else 0.0
        kept = model.get_weights()
        # Statistics of what the model serves: lab and field training photos (lab only without --field).
        recalibrate_batch_norm(model, recalibration_pixels, config.seed)
        after = top1(model, val_pixels, val_targets)
        after_field = top1(model, field_pixels, field_targets) if len(field_idx) else 0.0
        if after + after_field < before + before_field:  # the trained statistics were better: keep them
            log.info("%s: batch-norm recalibration made it worse (%.4f/%.4f): not kept", name, after, after_field)
            model.set_weights(kept)
            after = before
        proxy = None if proxy_pixels is None else top1(model, proxy_pixels, val_targets)
        verdict = None if unknown_pixels is None else verdict_strength(model, data, unknown_pixels, config.seed)
        field = top1(model, field_pixels, field_targets) if len(field_idx) else None
        log.info(
            "%s: validation top-1 %.4f before, %.4f after batch-norm recalibration; field proxy %s; verdict %s; "
            "field calibration photos %s",
            name,
            before,
            after,
            proxy,
            verdict,
            field,
        )
        candidates.append(Candidate(name, model, before, after, proxy, verdict, field))
    return pick(candidates), candidates


def outlier_groups(config, data) -> dict[str, np.ndarray]:
    """Held-out non-leaf photos by folder, plus synthetic ones: never trained on."""
    from training import data as ds

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
    if len(data.other_plants_held_out):
        groups["other plants, field photos (held out)"] = data.other_plants_held_out
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
    operating_point: ood.OperatingPoint | None = None  # with field photos: the field-aware threshold
    field_trials: list[ood.OperatingPoint] = dataclass_field(default_factory=list)
    field_outputs: dict[str, np.ndarray] | None = None  # the engine's outputs on the field report photos
    hint: HintPoint | None = None  # with field photos: the operating point for hinted photos
    lab_style: ood.LabStylePoint | None = None  # with field photos: the floor for photos that look like lab photos


def calibrate(model, config, data, groups: dict[str, np.ndarray]) -> Calibration:
    """Fit the in-domain statistics on training images (lab and field), then the verdict: with field photos,
    the field-aware operating point and crop-hint point (training/verdict.py); without, the distance weight
    on the selection set and the threshold on lab validation. Report every group."""
    engine = engine_for(model)
    field = data.field
    train_out = run_engine(engine, np.concatenate([data.pixels[data.train_idx], field.pixels[field.train_idx]]))
    train_targets = np.concatenate([data.dataset.targets[data.train_idx], field.targets[field.train_idx]])
    val_out = run_engine(engine, data.pixels[data.val_idx])
    point, field_trials, report_out, hint, lab_style = None, [], None, None, None
    if len(field.calibration_idx):
        unknowns = {kind: run_engine(engine, pixels) for kind, pixels in selection_by_kind(config, data).items()}
        fitted = verdict.fit(
            (train_out, train_targets),
            (val_out, data.dataset.targets[data.val_idx]),
            (run_engine(engine, field.pixels[field.calibration_idx]), field.targets[field.calibration_idx]),
            unknowns,
            data.dataset.labels,
            np.arange(len(train_targets)) >= len(data.train_idx),  # the field photos come after the lab leaves
        )
        stats, point, field_trials, hint, lab_style = (
            fitted.stats,
            fitted.point,
            fitted.trials,
            fitted.hint,
            fitted.lab_style,
        )
        threshold, trials = point.threshold, []
        report_out = run_engine(engine, field.pixels[field.report_idx])
    else:
        stats = ood.fit_statistics(
            train_out["logits"], train_out["features"], train_targets, val_out["logits"], val_out["features"]
        )
        stats, trials = ood.choose_distance_weight(stats, val_out, run_engine(engine, selection_set(config, data)))
        log.info("distance weight %g of %s", stats.distance_weight, [t.as_dict() for t in trials])
        threshold = ood.threshold_for(stats.scores(val_out["logits"], val_out["features"]))
    floor, lab_floor = (0.0, None) if point is None else (point.floor, lab_style and lab_style.floor)
    check = DomainCheck(stats, threshold, floor, lab_style_floor=lab_floor)
    scores = {"validation (known)": check.verdict_scores(val_out["logits"], val_out["features"])}
    if report_out is not None:
        scores["validation field photos (report half, known)"] = check.verdict_scores(
            report_out["logits"], report_out["features"]
        )
    for name, pixels in groups.items():
        out = run_engine(engine, pixels)
        scores[name] = check.verdict_scores(out["logits"], out["features"])
    return Calibration(stats, threshold, scores, trials, point, field_trials, report_out, hint, lab_style)


def selection_by_kind(config, data) -> dict[str, np.ndarray]:
    """The unknown photos that choose the field operating point, by kind (training/ood.selection_by_kind)."""
    from training import data as ds

    found = ds.unknowns_by_kind(config.outliers, config.field, held_out=False)
    cache = config.work_dir / "cache"
    loaded = {kind: ds.load_pixels(paths, config.input_size, cache) for kind, paths in found.items() if paths}
    return ood.selection_by_kind(loaded, data.pixels[data.train_idx], config.seed)


def field_proxy_set(data, seed: int) -> np.ndarray | None:
    """Validation leaves pasted onto held-out non-leaf photos (a stand-in for field photos); None without them."""
    if not len(data.held_out_outliers):
        return None
    return field_proxy_images(data.pixels[data.val_idx], data.held_out_outliers, seed)


def field_numbers(data, calibration: Calibration, labels: list[str]) -> dict:
    """The field report half through the chosen model and verdict (empty without field photos)."""
    out = calibration.field_outputs
    if out is None:
        return {}
    known = calibration.scores["validation field photos (report half, known)"] >= calibration.threshold
    targets = data.field.targets[data.field.report_idx]
    hinted = None
    if calibration.hint is not None:
        hinted = crop_hint.accepted_with_true_crop(calibration.stats, calibration.hint, out, targets, labels)
    return report.field_report(out["probabilities"], targets, known, labels, hinted)


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


def in_domain_metadata(calibration: Calibration, data, known_images: int) -> dict:
    """model.json's ``in_domain``: the method, threshold and operating points the service judges by."""
    calibrated_on = f"validation split, {known_images} images"
    point = calibration.operating_point
    if point is None or calibration.hint is None or calibration.lab_style is None:
        return {
            "method": METHOD,
            "threshold": calibration.threshold,
            "target_acceptance": ood.TARGET_ACCEPTANCE,
            "calibrated_on": calibrated_on,
            "distance_weight": calibration.stats.distance_weight,
        }
    fitted = verdict.FieldVerdict(
        calibration.stats, point, calibration.field_trials, calibration.hint, calibration.lab_style
    )
    return verdict.metadata(fitted, f"{calibrated_on}, and {len(data.field.calibration_idx)} field photos")


def evaluation_record(
    summary: dict, domain_report: list[dict], calibration: Calibration, proxy: dict, field: dict, candidates: list
) -> dict:
    """evaluation.json: what the finishing measured, which the card, /Diagnosis/model and soups read."""
    point = calibration.operating_point
    return {
        **summary,
        "split": "validation",
        "in_domain": domain_report,
        "distance_weight_trials": [t.as_dict() for t in calibration.weight_trials],
        "field_proxy": proxy,
        "field": field,
        "operating_point": None if point is None else point.as_dict(),
        "operating_point_trials": [t.as_dict() for t in calibration.field_trials],
        "candidates": [
            {
                "name": c.name,
                "top1_before": c.before,
                "top1": c.after,
                "field_proxy": c.field_proxy,
                "verdict_selection_rejected": c.verdict,
                "field_calibration_top1": c.field,
            }
            for c in candidates
        ],
    }


def draw_pictures(
    out: Path, evaluation: Evaluation, summary: dict, history: list[dict], scores: dict, threshold: float
) -> None:
    """The card's pictures: confusion matrix, training curve (when there is a history), in-domain scores."""
    low, high = summary["top1_interval_95"]
    plot_confusion(
        evaluation.confusion(),
        evaluation.labels,
        out / "confusion_matrix.png",
        f"Validation split, {summary['images']} images: top-1 {100 * summary['top1']:.1f}% "
        f"(95% CI {100 * low:.1f}-{100 * high:.1f})",
    )
    if history:
        plot_history(history, out / "training_curve.png")
    plot_scores(scores, threshold, out / "in_domain_scores.png")


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
    calibration = calibrate(chosen.model, config, data, groups)
    calibration.stats.save(out / model_dir.DOMAIN_FILE)
    threshold, scores = calibration.threshold, calibration.scores
    known = scores["validation (known)"]
    domain_report = [
        ood.report_group(name, known, values, threshold, name.startswith("validation")).as_dict()
        for name, values in scores.items()
    ]
    point = calibration.operating_point
    field_summary = field_numbers(data, calibration, labels)
    model_dir.update_metadata(out, in_domain=in_domain_metadata(calibration, data, len(known)))
    proxy = {} if chosen.field_proxy is None else {"images": len(data.val_idx), "top1": chosen.field_proxy}
    record = evaluation_record(summary, domain_report, calibration, proxy, field_summary, candidates)
    (out / model_dir.EVALUATION_FILE).write_text(json.dumps(record, indent=1))
    draw_pictures(out, evaluation, summary, history, scores, threshold)
    facts = card.CardFacts(
        config=config,
        version=version,
        labels=labels,
        excluded=data.dataset.excluded,
        train_counts=dict(class_counts(data.dataset, data.train_idx)),
        n_train=len(data.train_idx),
        n_outliers_train=len(data.outliers) - data.synthetic_outliers,
        n_synthetic_train=data.synthetic_outliers,
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
        field=field_summary,
        operating_point=point,
        hint=calibration.hint,
        lab_style=calibration.lab_style,
    )
    (out / model_dir.CARD_FILE).write_text(card.render(facts), encoding="utf-8")
    log.info("wrote %s: validation top-1 %.4f", out, summary["top1"])
    return out


def _machine() -> str:
    import os

    cores = len(os.sched_getaffinity(0))
    return f"{platform.machine()}, {cores} CPU core{'' if cores == 1 else 's'}, no GPU"
