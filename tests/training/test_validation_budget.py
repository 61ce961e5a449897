"""How many val slices an epoch validates on, and which ones."""

from __future__ import annotations

import numpy as np

from training.train import MIN_VAL_SLICES, VAL_SHARE, strided_subset, val_slice_cap


def test_cap_is_a_tenth_of_the_epoch_with_a_floor_and_the_split_as_ceiling():
    assert VAL_SHARE == 0.1
    assert val_slice_cap(352, 176) == 36  # the atlas cohort: 352 training slices, 176 val slices
    assert val_slice_cap(40, 176) == MIN_VAL_SLICES
    assert val_slice_cap(5000, 176) == 176
    assert val_slice_cap(40, 10) == 10


def test_a_given_cap_wins_but_not_beyond_the_split():
    assert val_slice_cap(352, 176, given=100) == 100
    assert val_slice_cap(352, 50, given=100) == 50


def test_strided_subset_spans_the_split_evenly():
    idx = strided_subset(176, 36)
    assert len(idx) == 36 and idx[0] == 0 and idx[-1] == 175
    gaps = np.diff(idx)
    assert gaps.min() >= 4 and gaps.max() <= 6  # 2 subjects x 88 slices: both subjects, all depths
    assert list(strided_subset(5, 9)) == [0, 1, 2, 3, 4]
