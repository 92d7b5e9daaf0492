"""What a model logs stays small when its feature vector is hundreds of thousands of slots wide."""

from __future__ import annotations

from types import SimpleNamespace

from sparkpipe.features.explain import MAX_JSON_SLOTS, Explanation
from sparkpipe.pipeline import MAX_META_FEATURE_NAMES, feature_names_meta


def test_model_metadata_keeps_names_of_narrow_vectors_and_only_the_count_of_wide_ones():
    narrow = SimpleNamespace(feature_names=["a", "b"])
    assert feature_names_meta(narrow) == {"feature_names": ["a", "b"], "num_features": 2}
    wide = SimpleNamespace(feature_names=[f"doc#tf{i}" for i in range(1 << 18)])
    assert feature_names_meta(wide) == {"feature_names": [], "num_features": 1 << 18}
    edge = SimpleNamespace(feature_names=[str(i) for i in range(MAX_META_FEATURE_NAMES)])
    assert len(feature_names_meta(edge)["feature_names"]) == MAX_META_FEATURE_NAMES


def test_explanation_json_lists_the_most_important_slots_of_a_wide_vector():
    n = 50_000
    slots = [(f"h{i}", "doc", 0.0 if i % 7 else float(i), 0.0) for i in range(n)]
    exp = Explanation(
        kind="coefficients", model_class="LogisticRegressionModel", columns=[("doc", 1.0, n)], slots=slots
    )
    out = exp.as_dict()
    assert out["slots_total"] == n and len(out["slots"]) == MAX_JSON_SLOTS
    top = [s["importance"] for s in out["slots"]]
    assert top == sorted(top, reverse=True) and top[0] == float(max(i for i in range(n) if i % 7 == 0))
    small = Explanation(kind="coefficients", model_class="X", columns=[], slots=slots[:10]).as_dict()
    assert [s["feature"] for s in small["slots"]] == [f"h{i}" for i in range(10)]  # slot order kept
