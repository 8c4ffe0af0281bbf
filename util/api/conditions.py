"""The Conditions namespace: what each label means for a grower, with its public source (util/conditions.json)."""

from __future__ import annotations

from flask_restx import Namespace, Resource, fields

from util import conditions
from util.api.errors import ApiError, error_model

ns = Namespace("Conditions", description="Notes on each condition the model knows: information, not advice")
ns.add_model(error_model.name, error_model)

source_model = ns.model(
    "Source",
    {
        "name": fields.String(required=True, example="Ohio State University Extension (Ohioline)"),
        "title": fields.String(required=True, example="Black Rot and Frogeye Leaf Spot of Apple"),
        "url": fields.String(required=True, example="https://ohioline.osu.edu/factsheet/plpath-fru-07"),
    },
)
note_model = ns.model(
    "ConditionNote",
    {
        "label": fields.String(required=True, description="The model's label", example="Apple_Black rot"),
        "plant": fields.String(required=True, example="Apple"),
        "condition": fields.String(required=True, example="Black rot"),
        "healthy": fields.Boolean(required=True, example=False),
        "summary": fields.String(required=True, description="What it is and its cause"),
        "signs": fields.List(fields.String, required=True, description="Signs to look for on the leaf"),
        "management": fields.List(fields.String, required=True, description="What growers usually do"),
        "source": fields.Nested(source_model, required=True, description="The public page it was summarised from"),
    },
)
disclaimer_field = fields.String(
    required=True, description="Show it with the notes", example="Information, not advice: ..."
)
one_note_model = ns.inherit("ConditionNoteWithDisclaimer", note_model, {"disclaimer": disclaimer_field})
all_notes_model = ns.model(
    "ConditionNotes",
    {
        "disclaimer": disclaimer_field,
        "conditions": fields.List(fields.Nested(note_model), required=True, description="One per label"),
    },
)


@ns.route("/")
class AllNotes(Resource):
    @ns.marshal_with(all_notes_model, description="Every note, in the model's label order")
    def get(self) -> dict:
        """List the notes on every condition, with the disclaimer."""
        notes = conditions.load_notes()
        return {"disclaimer": conditions.disclaimer(), "conditions": [n.as_dict() for n in notes.values()]}


@ns.route("/<string:label>")
@ns.param("label", "A label as the diagnosis names it, e.g. 'Tomato_Late blight' (URL-encoded)")
class OneNote(Resource):
    @ns.marshal_with(one_note_model, description="The note on this label")
    @ns.response(404, "No note for this label", error_model)
    def get(self, label: str) -> dict:
        """Get the note on one label, with the disclaimer."""
        note = conditions.note_for(label)
        if note is None:
            raise ApiError(404, f"No condition note for {label!r}; GET /Conditions/ lists every label.")
        return {**note.as_dict(), "disclaimer": conditions.disclaimer()}
