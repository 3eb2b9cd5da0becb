"""Prompt state: accumulation, persistence, stamp -> frame resolution (no ROS)."""

from __future__ import annotations

import numpy as np
import pytest

from mobilesam_ros.live.prompts import BOXES, CLEAR, POINTS, PromptError, PromptState, resolve_target, stamp_key


def _bind_all(state: PromptState, key):
    changes = state.take_changes()
    for change in changes:
        state.bind(change, key)
    return changes


def test_stamp_key_zero_means_no_stamp():
    assert stamp_key(0, 0) is None
    assert stamp_key(5, 7) == (5, 7)


def test_points_replace_without_accumulation():
    state = PromptState(accumulate_points=False)
    state.add_point(10, 20, True)
    state.add_point(30, 40, False)
    _bind_all(state, "f1")
    (obj,) = state.objects_for("f1")
    np.testing.assert_array_equal(obj.prompt.points, [[30, 40]])
    np.testing.assert_array_equal(obj.prompt.labels, [0])
    assert obj.single_point and obj.source == POINTS


def test_points_accumulate_until_clear():
    state = PromptState(accumulate_points=True)
    for x in (1, 2, 3):
        state.add_point(x, x, foreground=x != 2)
    _bind_all(state, "f1")
    (obj,) = state.objects_for("f1")
    np.testing.assert_array_equal(obj.prompt.labels, [1, 0, 1])
    assert len(obj.prompt.points) == 3 and not obj.single_point
    state.clear()
    changes = _bind_all(state, "f1")
    assert [c.group for c in changes] == [CLEAR]
    assert state.objects_for("f1") == []


def test_max_points_refuses_without_losing_state():
    state = PromptState(accumulate_points=True, max_points=2)
    state.add_point(1, 1)
    state.add_point(2, 2)
    with pytest.raises(PromptError, match="max_points"):
        state.add_point(3, 3)
    assert state.counts()["points"] == 2


@pytest.mark.parametrize("x, y", [(float("nan"), 1.0), (1.0, float("inf"))])
def test_non_finite_points_are_refused(x, y):
    state = PromptState()
    with pytest.raises(PromptError, match="not finite"):
        state.add_point(x, y)
    assert not state.has_changes()


def test_points_outside_the_latest_frame_are_refused_and_state_kept():
    state = PromptState(accumulate_points=True)
    state.bounds = (480, 640)
    state.add_point(100, 100)
    with pytest.raises(PromptError, match="outside the 640x480 image"):
        state.add_point(700, 10)
    with pytest.raises(PromptError):
        state.add_point(-1, 10)
    state.add_point(640, 480)  # the far edge is inside (pixel-edge coordinates)
    assert state.counts()["points"] == 2


def test_boxes_replace_clip_and_report_bad_ones():
    state = PromptState()
    state.bounds = (100, 200)
    problems = state.set_boxes(
        [[10, 10, 50, 50], [-5, -5, 300, 90], [5, 5, 5, 20], [np.nan, 0, 1, 1], [300, 300, 400, 400]],
        class_ids=["a", "b", "c", "d", "e"], scores=[0.9, 0.8, 0.7, 0.6, 0.5],
    )
    assert len(problems) == 3
    assert any("empty" in p for p in problems) and any("not finite" in p for p in problems)
    assert any("outside" in p for p in problems)
    _bind_all(state, "f")
    objs = state.objects_for("f")
    assert [o.class_id for o in objs] == ["a", "b"]
    np.testing.assert_array_equal(objs[1].prompt.box, [0, 0, 200, 90])
    assert objs[0].score == pytest.approx(0.9) and objs[0].source == BOXES


def test_only_bad_boxes_keep_the_previous_ones():
    state = PromptState()
    state.set_boxes([[0, 0, 10, 10]])
    _bind_all(state, "f")
    assert state.set_boxes([[5, 5, 1, 1]])  # reported
    assert not state.has_changes()
    assert len(state.objects_for("f")) == 1


def test_empty_box_list_clears_boxes():
    state = PromptState()
    state.set_boxes([[0, 0, 10, 10]])
    _bind_all(state, "f")
    assert state.set_boxes(np.zeros((0, 4))) == []
    _bind_all(state, "f")
    assert state.objects_for("f") == [] and state.counts()["boxes"] == 0


def test_max_boxes():
    state = PromptState(max_boxes=2)
    problems = state.set_boxes([[0, 0, 1, 1]] * 5)
    assert problems and "max_boxes" in problems[0]
    assert state.counts()["boxes"] == 2


def test_points_object_comes_first():
    state = PromptState()
    state.set_boxes([[0, 0, 10, 10]])
    state.add_point(3, 3)
    _bind_all(state, "f")
    assert [o.source for o in state.objects_for("f")] == [POINTS, BOXES]


def test_sticky_applies_to_later_frames_once_does_not():
    for persistence, later in (("sticky", 1), ("once", 0)):
        state = PromptState(persistence=persistence)
        state.add_point(5, 5)
        _bind_all(state, "f1")
        assert len(state.objects_for("f1")) == 1
        assert len(state.objects_for("f2")) == later, persistence


def test_unbound_changes_do_not_apply_yet():
    state = PromptState()
    state.add_point(5, 5)
    assert state.objects_for("f1") == []
    (change,) = state.take_changes()
    state.bind(change, "f1")
    assert len(state.objects_for("f1")) == 1


def test_stale_bind_is_ignored():
    state = PromptState(persistence="once")
    state.add_point(1, 1, stamp=(1, 0))
    (first,) = state.take_changes()
    state.add_point(2, 2, stamp=(2, 0))
    state.bind(first, "old")  # the group changed since: this bind is stale
    assert state.objects_for("old") == []


def test_discard_drops_a_prompt_that_has_no_frame():
    state = PromptState(accumulate_points=True)
    state.add_point(1, 1)
    (change,) = state.take_changes()
    state.discard(change)
    assert state.counts()["points"] == 0


def test_resolve_target():
    cached = {(1, 0), (2, 0)}
    assert resolve_target((1, 0), cached, None, (2, 0)) == ("cached", (1, 0))
    assert resolve_target((3, 0), cached, (3, 0), (2, 0)) == ("pending", (3, 0))
    assert resolve_target((9, 0), cached, (3, 0), (2, 0)) == ("latest", (2, 0))
    assert resolve_target(None, cached, (3, 0), (2, 0)) == ("latest", (2, 0))
    assert resolve_target((1, 0), set(), None, None) == ("none", None)
    assert resolve_target(None, set(), (4, 0), None) == ("pending", (4, 0))


def test_boxes_for_everything_mode():
    state = PromptState(persistence="once")
    assert state.boxes_for("f") is None
    state.set_boxes([[0, 0, 4, 4]], class_ids=["cup"])
    _bind_all(state, "f")
    boxes, ids = state.boxes_for("f")
    assert boxes.shape == (1, 4) and ids == ["cup"]
    assert state.boxes_for("g") is None


def test_bad_persistence():
    with pytest.raises(ValueError):
        PromptState(persistence="forever")
