"""mapspec.language.schema: the shipped JSON schema itself."""

from __future__ import annotations

import jsonschema

from mapspec.language import schema


def test_the_shipped_schema_is_a_valid_draft_2020_12_schema():
    """Checked here rather than at each run's start (it cost 0.1-0.26 s of every command)."""
    jsonschema.Draft202012Validator.check_schema(schema.schema())
