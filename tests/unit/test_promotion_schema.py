"""The promotion gate's schema comparison (pure: no Spark, no registry)."""

from __future__ import annotations

from sparkpipe.flow.promote import schema_difference

CHAMPION = {
    "task": "classification",
    "label_labels": ["no", "yes"],
    "input_schema": [["age", "int"], ["calls", "bigint"], ["plan", "string"], ["score", "double"]],
}


def _new(**changes):
    return {**CHAMPION, **changes}


def test_the_same_inputs_and_widened_numbers_are_the_same_schema():
    assert schema_difference(CHAMPION, _new()) is None
    # a CSV read infers double where the built-in data has int: every request still fits
    widened = [["age", "double"], ["calls", "double"], ["plan", "string"], ["score", "double"]]
    assert schema_difference(CHAMPION, _new(input_schema=widened)) is None


def test_narrowed_retyped_added_and_dropped_columns_differ():
    narrowed = [["age", "int"], ["calls", "bigint"], ["plan", "string"], ["score", "int"]]
    assert "score double->int" in schema_difference(CHAMPION, _new(input_schema=narrowed))
    to_text = [["age", "string"], ["calls", "bigint"], ["plan", "string"], ["score", "double"]]
    assert "age int->string" in schema_difference(CHAMPION, _new(input_schema=to_text))
    from_text = [["age", "int"], ["calls", "bigint"], ["plan", "double"], ["score", "double"]]
    assert "plan string->double" in schema_difference(CHAMPION, _new(input_schema=from_text))
    fewer = CHAMPION["input_schema"][1:]
    assert "columns no longer read: age" in schema_difference(CHAMPION, _new(input_schema=fewer))
    more = [*CHAMPION["input_schema"], ["region", "string"]]
    assert "new required columns: region" in schema_difference(CHAMPION, _new(input_schema=more))
    assert "class labels differ" in schema_difference(CHAMPION, _new(label_labels=["0", "1"]))
    assert "task classification -> regression" in schema_difference(CHAMPION, _new(task="regression"))
