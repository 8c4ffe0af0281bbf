"""Every sentence a user reads (API, page, server), in one place. Append; keep each one short and actionable."""

from __future__ import annotations

from collections.abc import Sequence

# --- crop hints and one plant (issue 23) ---------------------------------------------------------

CROP_HINT_HELP = (
    "Which crop the photo shows, spelled as the answer's species ('Tomato', 'Bell pepper'; case and "
    "spacing do not matter): the diagnosis is then made among that crop's labels only. GET /Diagnosis/model lists them"
)
PLANT_PHOTOS_HINT = (
    "Upload 1 to {limit} photos of one plant in the repeated multipart field 'images' "
    "(curl -F images=@leaf.jpg -F images=@underside.jpg ...)."
)
NO_PHOTO_READ = "None of the photos could be read as a photo of a leaf: {details}."
ONE_PLANT_UNKNOWN = (
    "None of these photos looks like a leaf of a crop this model knows ({crops}). For a diagnosis, "
    "photograph single leaves of the plant so that each fills the frame, on a plain background, in daylight."
)


def unknown_crop(name: str, known: Sequence[str]) -> str:
    return f"This model does not know the crop {name!r}. Send one of: {', '.join(known)} (or no crop)."


def too_many_plant_photos(sent: int, limit: int) -> str:
    return f"Send at most {limit} photos of one plant, not {sent}: " + PLANT_PHOTOS_HINT.format(limit=limit)


def no_plant_photo(limit: int) -> str:
    return "No photo was sent. " + PLANT_PHOTOS_HINT.format(limit=limit)


# --- hostile inputs, keys and floods (issue 27) ----------------------------------------------------

DECODE_TIMEOUT = "The service could not decode this photo within the request's time limit; try again in a moment."
TEXT_CHUNKS_TOO_LARGE = "The PNG's text metadata is too large; save the photo without metadata and try again."
API_KEY_REQUIRED = "This service needs an API key: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'."
API_KEY_WRONG = "The API key is not valid; check it, or ask the service's operator for one."
PAGE_OFF = "The page is turned off on this service; use the JSON API (see / for its documentation)."
INFERENCE_DEAD = "The diagnosis engine has stopped; the service is restarting. Try again in a moment."


def too_many_scans(scans: int, limit: int) -> str:
    return f"The JPEG has {scans:,} scans; photos have at most {limit}. Save it again as a normal JPEG and try again."


def output_not_empty(path: object) -> str:
    return f"{path} already holds results: add --resume to continue it or --force to overwrite it"


# --- feedback: growers confirm or correct a diagnosis (issue 24) ------------------------------------

FEEDBACK_OFF = (
    "This service does not keep diagnoses, so it takes no feedback (its operator can turn it on with "
    "PLANTNET_FEEDBACK=on)."
)
DIAGNOSIS_NOT_KEPT = "No diagnosis with this id is kept: it was never kept, was deleted, or is older than {days} days."
FEEDBACK_BODY = (
    'Send JSON like {"id": "<the diagnosis id>", "correct": false, "label": "Tomato_Late blight", "note": "..."}.'
)
FEEDBACK_ID = "id must be the 'id' of a diagnosis this service gave."
FEEDBACK_CORRECT = "correct must be true (the diagnosis was right) or false (it was wrong)."
FEEDBACK_LABEL_WHEN_RIGHT = "label is only for a wrong diagnosis (correct=false): leave it out when correct is true."
FEEDBACK_NOTE = "note must be plain text of at most {limit} characters."
STORAGE_UNAVAILABLE = "Feedback storage is not answering right now; nothing was saved. Try again in a moment."
FEEDBACK_THANKS = "Thank you: your answer is saved and helps the model learn from photos like yours."
FEEDBACK_FORGOTTEN = "The photo, its diagnosis and your answer are deleted."


def feedback_label(labels: Sequence[str], other: str) -> str:
    return f"label must be one of the model's labels (GET /Diagnosis/model), or {other!r}: " + ", ".join(labels)


def what_is_kept(days: int) -> str:
    """The page's plain statement of what this service keeps, shown only when it keeps anything."""
    return (
        f"This service keeps each photo you send (re-saved without its location or camera data, at most 1024 "
        f"pixels), its diagnosis and your answer for {days} days, to improve the model; then they are deleted. "
        "Delete them sooner with the 'Delete this photo' button."
    )


# --- the page: crop hint and one plant (issue 23) ------------------------------------------------

PAGE_UNKNOWN_CROP = "Unknown plant."
PAGE_PHOTO_LEFT_OUT = "Left out: not a leaf the model knows."


def page_plant_title(used: int, photos: int) -> str:
    return f"This plant: one diagnosis from {used} of {photos} photo{'' if photos == 1 else 's'}"


def page_photo_used(label_words: str) -> str:
    return f"Used: on its own it looks like {label_words}."


# --- said in several places once (issue 22): the API, the server, the page and its script ------------

BUSY = "The service is busy or restarting; try again in a moment."
DECODE_BUSY = "The service is busy decoding other large photos; try again in a moment."
UPLOAD_TOO_LARGE_UNREAD = "The upload is over the size limit; send a smaller photo."  # waitress refused it unread


def overloaded(seconds: int) -> str:
    return f"The service is overloaded; try again in {seconds} s."


def upload_too_large(limit: int) -> str:
    return f"The upload is over the {limit:,}-byte limit; send a smaller photo."


def request_too_large(limit: int) -> str:
    return f"The photos are over the {limit:,}-byte limit of one request together; send fewer or smaller photos."


def not_a_leaf(crops: Sequence[str]) -> str:
    return (
        f"This photo does not look like a leaf of a crop this model knows ({', '.join(crops)}). For a diagnosis, "
        "photograph one leaf so that it fills the frame, on a plain background, in daylight."
    )


# The page's card for a not-a-leaf verdict that came without the service's own message (not_a_leaf above).
PAGE_NOT_A_LEAF = (
    "This photo does not look like a leaf of a crop the model knows, so it gives no diagnosis. "
    "Take a photo of one leaf that fills the frame, on a plain background, in daylight."
)

# The page: (headline, what to do). Its script reads the ones it needs from the page (data-* attributes).
PAGE_BUSY = ("The service is busy.", "Try again in a moment.")
PAGE_PHOTO_TOO_LARGE = "This photo is too large."
PAGE_NOT_READABLE = "This file is not a photo the service can read."
PAGE_NOT_A_PHOTO = "This file could not be read as a photo."
PAGE_PHOTO_FAILED = "Something went wrong with this photo."
PAGE_NO_PHOTO = ("No photo was chosen.", "Choose one or more leaf photos first.")
PAGE_TOO_MANY = "Too many photos at once."
PAGE_TOO_LARGE_TOGETHER = "The photos are too large together."
PAGE_NOT_SAVED = "Your answer was not saved."
PAGE_NOT_DELETED = "Nothing was deleted."
PAGE_CARDS_BODY = (
    'Send JSON like {"mode": "photos", "numbers": [1], "filenames": ["leaf.jpg"], "answer": <the API\'s answer>}.'
)


def page_checked(parts: Sequence[str]) -> str:
    """The live region's sentence once the photos are checked: one part per photo."""
    count = len(parts)
    return f"{count} photo{'' if count == 1 else 's'} checked: " + "; ".join(part.rstrip(".") for part in parts) + "."


def page_plant_checked(count: int, said: str) -> str:
    return f"{count} photo{'' if count == 1 else 's'} of one plant checked: {said}."


PAGE_NO_DIAGNOSIS = "no diagnosis"
PAGE_NOT_KNOWN = "not a leaf the model knows"


def page_photo_words(number: int, words: str) -> str:
    return f"photo {number}: {words}"


def page_diagnosis_words(species: str, condition: str, healthy: bool, percent: str) -> str:
    return f"{species}, {'healthy' if healthy else condition}, {percent} sure"


# What only the page's script says (before sending, and when the service cannot be reached).
PAGE_SCRIPT = {
    "notAPhoto": "This file is not a photo.",
    "choosePhoto": "Choose a photo of a leaf ({formats}).",
    "empty": "This file is empty.",
    "chooseAgain": "Choose the photo again, or take a new one.",
    "tooLarge": "This photo is too large.",
    "tooLargeDetail": (
        "It is {size}; each photo may be up to {limit}. Send a smaller copy (phones can share a smaller size)."
    ),
    "tooMany": "Too many photos at once.",
    "tooManyDetail": "Send at most {limit} photos at a time; {left} were left out.",
    "tooManyPlant": "Too many photos of one plant.",
    "tooManyPlantDetail": "You chose {count}; send at most {limit} photos of one plant.",
    "tooLargeTogether": "The photos are too large together.",
    "tooLargeTogetherDetail": "They add up to {size}; send at most {limit} at a time.",
    "noNewPhoto": "No new photo was chosen.",
    "noPhoto": "No photo was chosen.",
    "choosePhotos": "Choose one or more leaf photos first.",
    "nothingToSend": "Nothing to send.",
    "nothingToSendDetail": "None of the chosen files is a photo the service can take; choose others.",
    "ready": "{count} ready: press Diagnose.",
    "noneReady": "No photo to send yet.",
    "readyToSend": "Ready to send.",
    "diagnosing": "Diagnosing\u2026",
    "diagnosingCount": "Diagnosing {count}\u2026",
    "busy": PAGE_BUSY[0],
    "busyDetail": PAGE_BUSY[1],
    "noPlantDiagnosis": "No diagnosis for this plant.",
    "chooseOther": "Choose other photos.",
    "notSent": "The photos could not be sent.",
    "chooseThemAgain": "Choose them again.",
    "sendFewer": "Send fewer or smaller photos.",
    "wentWrong": "Something went wrong (status {status}).",
    "wentWrongDetail": "Try again; if it keeps happening, tell whoever runs this service.",
    "unreachable": "Could not reach the service.",
    "unreachableDetail": "Check the connection and try again.",
    "eachPhoto": "Each photo",
    "deleted": "Deleted: the photo, its diagnosis and your answer.",
    "notDeleted": "Nothing was deleted; try again in a moment.",
    "thanks": "Thank you: your answer is saved.",
    "notSaved": "Your answer was not saved; try again in a moment.",
    "send": "Send",
}
