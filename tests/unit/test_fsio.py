"""Directory outputs swapped into place (sparkpipe.fsio): new and replaced targets, no leftovers."""

from __future__ import annotations

from pathlib import Path

from sparkpipe.fsio import swap_into_place, temp_sibling


def _write(d: Path, text: str) -> Path:
    d.mkdir()
    (d / "part-0").write_text(text)
    return d


def test_a_new_target_and_a_replaced_one_hold_only_the_new_files(tmp_path: Path) -> None:
    target = tmp_path / "out"
    tmp = temp_sibling(target)
    assert tmp.parent == tmp_path and tmp.name.startswith(".out.tmp-") and not tmp.exists()
    swap_into_place(_write(tmp, "first"), target)
    assert [p.name for p in target.iterdir()] == ["part-0"] and (target / "part-0").read_text() == "first"
    (target / "stale").write_text("from the first write")
    swap_into_place(_write(temp_sibling(target), "second"), target)
    assert [p.name for p in target.iterdir()] == ["part-0"] and (target / "part-0").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .tmp-/.old- siblings left
    assert temp_sibling(target) != temp_sibling(target)
