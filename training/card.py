"""The model card (MODEL.md), rendered from the training config and the numbers measured after training."""

from __future__ import annotations

from dataclasses import dataclass, field

from training import ood, report
from training.evaluation import Evaluation, per_class_table
from training.ood import VERDICT_SAMPLE, VERDICT_TOLERANCE


@dataclass(frozen=True)
class CardFacts:
    config: object  # train.TrainConfig
    version: str
    labels: list[str]
    excluded: dict[str, int]
    train_counts: dict[str, int]
    n_train: int
    n_outliers_train: int  # real photos; the synthetic ones are counted apart
    n_synthetic_train: int
    evaluation: Evaluation
    candidate: tuple[str, float, float]  # name, top-1 before and after batch-norm recalibration
    history: list[dict]
    parameters: int
    domain_report: list[dict]
    threshold: float
    target_acceptance: float
    field_proxy: dict = field(default_factory=dict)
    # name, top-1 before and after recalibration, field proxy, share of the selection set its trial verdict rejects
    candidates: list[tuple[str, float, float, float | None, float | None]] = field(default_factory=list)
    weight_trials: list = field(default_factory=list)  # training.ood.WeightTrial, one per distance weight tried
    distance_weight: float = 1.0
    machine: str = ""
    origin: str = ""  # with --finish-from: where the given weights came from (training.soup.describe)
    field: dict = field(default_factory=dict)  # training.report.field_report of the field report half
    operating_point: object = None  # training.ood.OperatingPoint, with field photos
    hint: object = None  # util.domain.HintPoint, with field photos
    lab_style: object = None  # training.ood.LabStylePoint, with field photos


FIELD_CITATION = (
    "PlantDoc (Singh et al., CoDS-COMAD 2020, doi:10.1145/3371158.3371196; CC BY 4.0), its train split "
    "sorted into our class folders"
)


def field_section(facts: CardFacts) -> str:
    """Field photos beside lab photos: what the verdict accepts, gets right and gets wrong."""
    if not facts.field:
        return ""
    point = facts.operating_point
    missing = sorted(set(facts.labels) - {row["label"] for row in facts.field["per_class"]})
    return f"""## Field photos

Field and web photos of our crops ({FIELD_CITATION}). 20% of each class's photos, split by
near-copy groups, were never trained on: half chose the candidate and the verdict's operating point,
the other half (below) only reports. *Right*: accepted and correct; *harm*: accepted and wrong.
*With the crop*: the best guess among the true crop's labels (the API's `crop` hint).

{report.field_table(facts.field)}

The verdict's operating point: the in-domain threshold and the floor on the model's top probability that
get the most calibration-half field photos right with at most {_pct(ood.FIELD_HARM_LIMIT, 0)} of them accepted
and wrong, while the selection set's unknown photos are rejected at {_rejection_targets()} and,
where any point allows it, {_pct(ood.LAB_ACCEPTANCE_FLOOR, 0)} of lab validation leaves accepted;
distance weight {point.weight:g}, threshold {point.threshold:.3f}, probability floor {point.floor:g}
(calibration half: {_pct(point.field_right)} right, {_pct(point.field_harm)} harm, {_pct(point.field_accepted)}
accepted; lab validation accepted {_pct(point.lab_accepted)}; selection set rejected {_rejected(point)}).
{_lab_style_sentence(facts)}
{_hint_sentence(facts)}

**No field photos for:** {", ".join(missing) or "none"}. Their field numbers are unknown.

"""


def _synthetic(count: int) -> str:
    return f", with {count} synthetic ones (noise, solid colours, shuffled leaf patches)" if count else ""


def _rejection_targets(targets: dict[str, float] = ood.UNKNOWN_REJECTION) -> str:
    return " and ".join(f"{_pct(share, 0)} ({kind})" for kind, share in targets.items())


def _rejected(point) -> str:
    return ", ".join(f"{kind} {_pct(share)}" for kind, share in point.unknown_rejected.items())


def _lab_style_sentence(facts) -> str:
    lab = facts.lab_style
    if lab is None:
        return ""
    return (
        f"A photo that looks like the lab photos (one leaf on a plain background: a linear probe on the pooled "
        f"features, fitted on lab and field training photos) needs a top probability of only {lab.floor:g}: the "
        f"highest floor that accepts {_pct(ood.LAB_STYLE_ACCEPTANCE)} of lab validation leaves with every limit "
        f"above still held (lab validation accepted {_pct(lab.lab_accepted)}; calibration-half harm "
        f"{_pct(lab.field_harm)}; selection set rejected {_rejected(lab)})."
    )


def _hint_sentence(facts) -> str:
    hint = facts.hint
    if hint is None:
        return ""
    return (
        f"A photo sent with a crop hint is judged by its own point (training/crop_hint.py): threshold "
        f"{hint.threshold:.3f}, top probability at least {hint.probability_floor:g} over all labels and "
        f"{hint.crop_probability_floor:g} among the crop's, chosen like the plain one but with unknown photos "
        f"(each sent with every crop) rejected at {_rejection_targets(ood.HINTED_UNKNOWN_REJECTION)}: another "
        f"plant's leaf comes with a hint only by mistake (the table's row \"each sent with its true crop\")."
    )


def _pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def results_section(facts: CardFacts) -> str:
    config = facts.config
    summary = facts.evaluation.summary()
    low, high = summary["top1_interval_95"]
    rows = [
        f"| validation ({100 * config.val_fraction:.0f}% of each class, near-copies kept together, seed {config.seed}) "
        f"| {summary['images']} "
        f"| **{_pct(summary['top1'], 2)}** ({_pct(low)}-{_pct(high)}) | {_pct(summary['top3'], 2)} |"
    ]
    if facts.field_proxy:
        proxy = facts.field_proxy
        rows.append(
            f"| field-photo proxy: the same validation leaves pasted onto held-out non-leaf photos | {proxy['images']} "
            f"| {_pct(proxy['top1'], 2)} | |"
        )
    name, before, after = facts.candidate
    weakest = sorted((r for r in facts.evaluation.per_class() if r["recall"] is not None), key=lambda r: r["recall"])
    return f"""## Results

| split | images | top-1 (95% interval) | top-3 |
|---|---:|---:|---:|
{chr(10).join(rows)}

Shipped: the {name} after batch-norm recalibration (validation top-1 {_pct(before, 2)} before,
{_pct(after, 2)} after). {_provenance(facts)}
Machine: {facts.machine}.

{_candidate_table(facts.candidates)}

![confusion matrix on the validation split](confusion_matrix.png)

Weakest classes by recall: {", ".join(f"{r['label']} ({_pct(r['recall'], 0)})" for r in weakest[:3])}.

### Per class (validation split)

{per_class_table(facts.evaluation, facts.train_counts)}
"""


def _candidate_table(candidates: list[tuple[str, float, float, float | None, float | None]]) -> str:
    rows = "\n".join(
        f"| {name} | {_pct(before, 2)} | {_pct(after, 2)} | {_pct(proxy, 2)} | {_pct(verdict)} |"
        for name, before, after, proxy, verdict in candidates
    )
    return f"""Candidates compared: the best validation top-1 ships, unless its in-domain verdict is more than
{100 * VERDICT_TOLERANCE:g} points weaker than the strongest candidate's (verdict column: share of the
selection set's unknown photos, the non-leaf photos training saw and synthetic ones, rejected by a trial
verdict fitted on {VERDICT_SAMPLE:,} training images; never the held-out photos of the tables below).

| candidate | before recalibration | after | field-photo proxy | verdict (selection set) |
|---|---:|---:|---:|---:|
{rows}
"""


def _provenance(facts: CardFacts) -> str:
    config = facts.config
    if config.finish_from is not None:
        return f"Not trained by this command: it finished the weights in `{config.finish_from}` (see Training)."
    return f"Epochs run: {len(facts.history)} of {config.epochs}{_training_time(facts.history)}."


def _training_time(history: list[dict]) -> str:
    seconds = [float(h["seconds"]) for h in history if h.get("seconds")]
    return f", {sum(seconds) / 60:.0f} minutes of training" if len(seconds) == len(history) and seconds else ""


def _domain_row(row: dict) -> str:
    share = row["rejected"] / row["images"] if row["images"] else 0.0
    auroc = "" if row["auroc"] is None else f"{row['auroc']:.3f}"
    fpr = "" if row["fpr_at_95_tpr"] is None else _pct(row["fpr_at_95_tpr"])
    return f"| {row['name']} | {row['images']} | {row['rejected']} ({_pct(share)}) | {auroc} | {fpr} |"


def _weight_sentence(facts: CardFacts) -> str:
    if not facts.weight_trials:
        return ""
    tried = ", ".join(f"{t.weight:g} rejects {_pct(t.rejected)}" for t in facts.weight_trials)
    return (
        f"The distance term's weight is {facts.distance_weight:g}, chosen on the selection set "
        f"(the non-leaf photos training saw and synthetic ones; at the threshold: {tried})."
    )


def domain_section(facts: CardFacts) -> str:
    rows = "\n".join(_domain_row(r) for r in facts.domain_report)
    return f"""## Is it a leaf the model knows? (the in-domain verdict)

Every answer carries `in_domain`: a score (the share of known validation leaves that look less
typical than the photo), the threshold {facts.threshold:.4f} it is judged by, and the yes/no
(util/domain.py: Mahalanobis distance of the pooled features to the nearest class mean plus the
energy of the logits). The threshold keeps {_pct(facts.target_acceptance)} of the validation leaves.
{_weight_sentence(facts)}
Non-leaf groups below were never trained on (the non-leaf photos are split in two by a hash of
their file name; training used the other half).

| images | count | rejected at the threshold | AUROC vs validation | FPR at 95% TPR |
|---|---:|---:|---:|---:|
{rows}

![in-domain scores](in_domain_scores.png)
"""


def history_table(history: list[dict]) -> str:
    return "\n".join(
        f"| {int(h['epoch']) + 1} | {float(h['loss']):.3f} | {_pct(float(h['accuracy']))} "
        f"| {float(h['val_loss']):.3f} | {_pct(float(h['val_accuracy']))} |"
        for h in history
    )


PRECISE_BN = 'batch-norm statistics are recomputed on unaugmented training images ("precise BN")'
CALIBRATION = "the in-domain statistics are fitted on the training images and calibrated on the validation split"


def curve_section(facts: CardFacts) -> str:
    if not facts.history:
        return "## Training curve\n\nNo training in this run (see Training).\n\n"
    return f"""## Training curve

![training curve](training_curve.png)

| epoch | loss | accuracy | val loss | val accuracy (epoch end, before precise BN) |
|---:|---:|---:|---:|---:|
{history_table(facts.history)}

"""


def training_section(facts: CardFacts) -> str:
    config = facts.config
    if config.finish_from is not None:
        made = facts.origin or "made outside this run."
        return f"""## Training

    {config.command}

Not trained by this command: the recipe and augmentation that trained the weights are theirs, not
this command's defaults. The finishing: {PRECISE_BN}, and {CALIBRATION}. The weights
(`{config.finish_from}`) are {made}

"""
    augmentation = "\n".join(f"- {line}" for line in config.augment.describe())
    return f"""## Training

    {config.command}

AdamW (learning rate {config.learning_rate:g}, {config.warmup_epochs:g} warm-up epochs, cosine decay;
weight decay {config.weight_decay:g}, not on batch-norm parameters or biases), global-norm clipping 1.0,
weight EMA (momentum {config.ema_momentum:g}), label smoothing {config.label_smoothing:g}, batch
{config.batch_size}, {config.precision} with float32 logits, training seed {config.training_seed}, up to {config.epochs}
epochs{f", started from {config.init_from}" if config.init_from else ""}. Keras callbacks:
BackupAndRestore (`--resume`), ModelCheckpoint, EarlyStopping (patience {config.patience}),
CSVLogger, TerminateOnNaN. After training, {PRECISE_BN}, the candidates above are compared (the
last and the best epoch, and for a fine-tune the halfway point between its start and its last epoch),
and {CALIBRATION}.

Augmentation (training only, training/augment.py):
{augmentation}

"""


def render(facts: CardFacts) -> str:
    config = facts.config
    excluded = ", ".join(f"`{k}` ({v})" for k, v in facts.excluded.items()) or "none"
    return f"""# PlantNet leaf-disease model, version {facts.version}

An InceptionV3 network trained from scratch to name the disease (or health) of a single plant
leaf in a photo, with a verdict on whether the photo is a leaf it knows at all. It is the
default model of PlantNet API (`plantnet/`).

{results_section(facts)}
{field_section(facts)}{domain_section(facts)}
{curve_section(facts)}## Data

Real PlantVillage leaf photos (Hughes and Salathé 2015, arXiv:1511.08060): lab photographs of one
leaf on a plain background, 256x256 JPEG. {facts.n_train} images trained the model and
{facts.evaluation.summary()["images"]} were held out for validation, about the same share of each class,
near-copies of one leaf kept on one side.
{facts.n_outliers_train} real photos of things that are no leaf of ours (people, objects, scenes,
other plants) served as backgrounds and for outlier exposure{_synthetic(facts.n_synthetic_train)}.
Folder names map to the display labels the original PlantNet API returned (`labels.tsv`).

**Left out:** {excluded}: fewer than {config.min_images} photos each, too few to learn or to
measure. The model cannot answer them; the in-domain verdict is measured on them above.

## Architecture and input

`keras.applications.InceptionV3(include_top=False, weights=None)`, global average pooling,
dropout 0.3, a {len(facts.labels)}-way float32 dense layer (the logits) and a softmax;
{facts.parameters / 1e6:.1f} M parameters. Input {config.input_size}x{config.input_size} RGB
scaled to [-1, 1] by util/leaf.py (shared by training, evaluation and the service).

{training_section(facts)}## Known limits

- Lab photos: every training leaf was photographed on a plain background. Pasting leaves onto
  real photos helps, but field photos (several leaves, soil, hands, shadows) remain harder;
  the proxy row above is an estimate, not a measurement on field photos.
- Near-duplicate photos of the same leaf can occur in both splits (PlantVillage photographs some
  leaves several times), so validation accuracy may be optimistic.
- The in-domain verdict is calibrated to reject about 2.5% of known leaves; photos of the
  left-out classes and of other crops are the hardest to reject (see the table).
"""
