"""JSON schemas shared by the constrained-decoding tests (library, CLI, eval, server)."""

ORDER = {
    "type": "object",
    "properties": {
        "intent": {"enum": ["order", "cancel", "return"]},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 12},
        "urgent": {"type": "boolean"},
    },
    "required": ["intent", "quantity", "urgent"],
    "additionalProperties": False,
}
"""A small order: every valid reply is short, so even a random tiny model finishes it."""
