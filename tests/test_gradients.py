"""Gradients over depth (graphmerge/gradients.py), against numpy's piecewise-linear interpolation."""

from __future__ import annotations

import numpy as np
import pytest

from graphmerge.gradients import at_position, interpolate, is_gradient


@pytest.mark.parametrize("points", [[0.25], [0.0, 1.0], [1.0, 0.0, 0.5], [0.1, 0.9, 0.3, 0.7, 0.2]])
def test_interpolate_is_piecewise_linear_over_evenly_spaced_layers(points):
    knots = np.linspace(0.0, 1.0, len(points))
    for position in np.linspace(-0.2, 1.2, 29):
        expected = np.interp(position, knots, points)  # clamps outside 0..1, like the depth axis
        assert interpolate(points, float(position)) == pytest.approx(expected, abs=1e-12)


def test_a_gradient_is_a_non_empty_list_of_numbers():
    assert is_gradient([0, 1.5]) and is_gradient([2])
    assert not is_gradient([]) and not is_gradient([True, 0.5]) and not is_gradient([0.5, "a"])
    assert not is_gradient(0.5) and not is_gradient([{"value": 0.5}])


def test_at_position_evaluates_gradients_inside_filters_and_keeps_everything_else():
    value = [{"filter": "self_attn", "value": [0.0, 1.0]}, {"filter": "mlp"}, {"value": 0.3}]
    assert at_position(value, 0.25) == [
        {"filter": "self_attn", "value": 0.25},
        {"filter": "mlp"},
        {"value": 0.3},
    ]
    assert at_position([0.0, 1.0, 0.0], 0.75) == pytest.approx(0.5)
    for kept in (0.5, "ties", [], [True, False], None):
        assert at_position(kept, 0.5) == kept
