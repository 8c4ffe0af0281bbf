"""The feedback storage suite (util/feedback), run the same on every backend it supports.

Databases: a real SQLite file, and a real PostgreSQL server (a throwaway cluster on 127.0.0.1,
where the binaries are installed). Photos: a local folder, and a real S3 API (moto's server on
127.0.0.1). SQLite with a local folder is the fast default; the others start servers and are slow.
"""

from __future__ import annotations

import io
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from PIL import Image
from prometheus_client import REGISTRY

from tests.support import (
    TINY_METADATA,
    exif_jpeg,
    fresh_postgres_database,
    moto_s3,
    postgres_server,
    postgres_unavailable,
    s3_client,
)
from util.domain import UNAVAILABLE
from util.feedback import Database, FeedbackStore, LocalPhotoStore, S3PhotoStore
from util.feedback.photos import MAX_SIDE
from util.labels import Prediction
from util.service import Diagnosis

BUCKET = "plantnet-feedback-test"
names = (f"t{n}" for n in itertools.count())


def a_diagnosis(label: str = "Tomato_Late blight") -> Diagnosis:
    species, condition = label.split("_", 1)
    guess = Prediction(label, 0.8)
    return Diagnosis(label, 0.8, [guess], species, condition, condition == "healthy", dict(TINY_METADATA), UNAVAILABLE)


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Clock:
    """A clock the test moves: retention is days long."""

    def __init__(self):
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


# --- backends ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_url():
    if reason := postgres_unavailable():
        pytest.skip(reason)
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def s3_endpoint():
    with moto_s3({BUCKET: {}}) as endpoint:
        yield endpoint


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'feedback.sqlite3'}"
    return fresh_postgres_database(request.getfixturevalue("postgres_url"), next(names))


@pytest.fixture(params=["folder", pytest.param("s3", marks=pytest.mark.slow)])
def photos(request, tmp_path):
    if request.param == "folder":
        return LocalPhotoStore(tmp_path / "photos")
    return S3PhotoStore(BUCKET, f"{next(names)}/photos", client=s3_client(request.getfixturevalue("s3_endpoint")))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(database_url, photos, clock):
    kept = FeedbackStore(Database(database_url), photos, days=180, clock=clock)
    yield kept
    kept.close()


def kept_id(store: FeedbackStore, photo: bytes | None = None, label: str = "Tomato_Late blight") -> str:
    diagnosis_id = store.keep(photo or exif_jpeg((400, 300)), a_diagnosis(label))
    assert diagnosis_id
    store.flush()
    return diagnosis_id


# --- the suite --------------------------------------------------------------------------------------


def test_a_kept_diagnosis_reads_back_with_its_answer_and_photo(store):
    diagnosis_id = kept_id(store)
    kept = store.get(diagnosis_id)
    assert kept is not None and kept.id == diagnosis_id
    assert kept.label == "Tomato_Late blight" and kept.answer["label"] == "Tomato_Late blight"
    assert kept.answer["id"] == diagnosis_id and kept.answer["top_k"] == [
        {"label": "Tomato_Late blight", "confidence": 0.8}
    ]
    assert (kept.model_name, kept.model_version) == (TINY_METADATA["name"], TINY_METADATA["version"])
    assert kept.feedback is None and kept.created_at.tzinfo is not None
    assert store.photos.exists(kept.photo)


def test_a_stored_photo_has_no_exif_and_at_most_1024_px(store):
    original = exif_jpeg((2000, 1500))
    assert Image.open(io.BytesIO(original)).getexif()  # the upload carries camera and GPS data
    kept = store.get(kept_id(store, original))
    photo = Image.open(io.BytesIO(store.photos.get(kept.photo)))
    assert photo.format == "JPEG" and max(photo.size) == MAX_SIDE and photo.size == (1024, 768)
    assert not photo.getexif() and not photo.getexif().get_ifd(0x8825)
    assert not {"exif", "icc_profile", "xmp", "comment"} & set(photo.info)


def test_feedback_is_recorded_and_can_be_changed(store, clock):
    diagnosis_id = kept_id(store)
    clock.now += timedelta(minutes=5)
    saved = store.give_feedback(diagnosis_id, False, "Tomato_healthy", "new leaves look fine")
    assert saved is not None and saved.at == clock.now
    feedback = store.get(diagnosis_id).feedback
    assert (feedback.correct, feedback.label, feedback.note) == (False, "Tomato_healthy", "new leaves look fine")
    assert store.get(diagnosis_id).true_label == "Tomato_healthy"
    assert store.give_feedback(diagnosis_id, True, None, None) is not None  # the grower changed their mind
    again = store.get(diagnosis_id)
    assert (again.feedback.correct, again.feedback.label, again.true_label) == (True, None, "Tomato_Late blight")


def test_unknown_ids_are_none_everywhere(store):
    kept_id(store)
    assert store.get("no-such-id") is None
    assert store.give_feedback("no-such-id", True, None, None) is None
    assert store.delete("no-such-id") is False


def test_a_deleted_diagnosis_leaves_no_photo(store):
    diagnosis_id = kept_id(store)
    photo = store.get(diagnosis_id).photo
    assert store.photos.exists(photo)
    assert store.delete(diagnosis_id) is True
    assert store.get(diagnosis_id) is None
    assert not store.photos.exists(photo)
    assert store.delete(diagnosis_id) is False


def test_purge_removes_what_is_older_than_the_retention_with_its_photo(store, clock):
    old = kept_id(store)
    old_photo = store.get(old).photo
    clock.now += timedelta(days=100)
    recent = kept_id(store)
    clock.now += timedelta(days=81)  # old is 181 days old, recent 81
    assert store.get(old) is None and store.give_feedback(old, True, None, None) is None  # expired: not served
    assert store.purge() == 1
    assert not store.photos.exists(old_photo)
    assert store.get(recent) is not None
    assert store.database.count() == 1


def test_migrations_are_idempotent_and_at_head(store, database_url):
    kept_id(store)
    store.database.migrate()  # a second replica starting against the same database
    with sa.create_engine(database_url).connect() as connection:
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == "0001"
    assert store.database.count() == 1


def test_with_feedback_lists_confirmed_and_corrected_only(store):
    confirmed, corrected, silent = kept_id(store), kept_id(store), kept_id(store)
    store.give_feedback(confirmed, True, None, None)
    store.give_feedback(corrected, False, "Apple_scab", None)
    listed = {kept.id: kept.true_label for kept in store.database.with_feedback()}
    assert listed == {confirmed: "Tomato_Late blight", corrected: "Apple_scab"}
    assert silent not in listed


def test_a_full_queue_drops_the_photo_and_counts_it(database_url, photos):
    small = FeedbackStore(Database(database_url), photos, queue_bytes=1000)
    try:
        before = counter("plantnet_feedback_dropped_total")
        assert small.keep(exif_jpeg((400, 300)), a_diagnosis()) is None  # over 1000 bytes
        assert counter("plantnet_feedback_dropped_total") == before + 1
    finally:
        small.close()


def test_a_failing_photo_store_is_counted_and_keeps_nothing(database_url, tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the photo folder should be")
    broken = FeedbackStore(Database(database_url), LocalPhotoStore(blocked))
    try:
        before = counter("plantnet_feedback_failures_total", operation="keep")
        diagnosis_id = broken.keep(exif_jpeg((400, 300)), a_diagnosis())
        broken.flush()
        assert counter("plantnet_feedback_failures_total", operation="keep") == before + 1
        assert broken.get(diagnosis_id) is None
    finally:
        broken.close()


def test_an_unreachable_database_fails_requests_not_the_writer(tmp_path):
    from util.feedback import StorageUnavailable

    gone = FeedbackStore(
        Database("postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=2"),
        LocalPhotoStore(tmp_path / "photos"),
        timeout_s=20,
    )
    try:
        before = counter("plantnet_feedback_failures_total", operation="keep")
        assert gone.keep(exif_jpeg((400, 300)), a_diagnosis())  # handed over at once
        with pytest.raises(StorageUnavailable):
            gone.give_feedback("any", True, None, None)
        assert counter("plantnet_feedback_failures_total", operation="keep") == before + 1
        assert not any(Path(tmp_path / "photos").glob("*.jpg"))  # the photo of a row never written is gone
    finally:
        gone.close()


def test_feedback_right_after_a_burst_of_diagnoses_finds_its_diagnosis(store):
    """Diagnoses queued together are written in one transaction; what is queued after them sees them all."""
    ids = [store.keep(exif_jpeg((300, 200)), a_diagnosis()) for _ in range(20)]
    assert store.give_feedback(ids[-1], True, None, None) is not None  # no flush: the writer keeps the order
    assert store.database.count() == 20
    assert all(store.photos.exists(store.get(i).photo) for i in ids)


def test_every_shipped_label_has_a_class_folder_for_the_export():
    from training.feedback import DEFAULT_LABELS, class_folders

    if not DEFAULT_LABELS.is_file():
        pytest.skip(f"{DEFAULT_LABELS} is not here (shared/ beside the repository)")
    shipped = (Path(__file__).resolve().parent.parent / "plantnet" / "labels.txt").read_text().split("\n")
    folders = class_folders(DEFAULT_LABELS)
    assert [label for label in shipped if label and label not in folders] == []
