"""Calibration: equal-width bins, the expected calibration error, and the isotonic curve `segqa select` reads."""

import numpy as np
from sklearn.isotonic import IsotonicRegression

from analysis.calibration import expected_calibration_error, isotonic_curve, reliability_table


def test_values_on_exact_tenths_fall_in_the_bin_they_open():
    x = np.round(np.arange(0, 1.01, 0.1), 1)  # 0.0 ... 1.0
    table = reliability_table(x, np.ones_like(x, dtype=bool))
    assert table["n"].tolist() == [1] * 9 + [2]  # 1.0 closes the last bin; 0.3, 0.6 and 0.7 no longer drop a bin


def test_ece_by_hand():
    # bins: 0.1 -> [0.1, 0.2), 0.2 -> [0.2, 0.3), 0.3 -> [0.3, 0.4), 0.7 -> [0.7, 0.8): every bin one item
    # ECE = (|0.1 - 0| + |0.2 - 0| + |0.3 - 1| + |0.7 - 1|) / 4 = 0.325
    ece = expected_calibration_error(np.array([0.1, 0.2, 0.3, 0.7]), np.array([False, False, True, True]))
    assert abs(ece - 0.325) < 1e-12


def test_the_stored_curve_predicts_what_the_isotonic_fit_predicts_even_for_close_knots():
    rng = np.random.default_rng(4)
    for x in (np.array([0.1, 0.5000001, 0.5000004, 0.9]), np.round(rng.uniform(0.3, 1, 400), 6)):
        y = np.arange(x.size) % 3 != 0 if x.size > 4 else np.array([False, False, True, True])
        curve = isotonic_curve(x, y)
        fitted = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(x, y)
        probe = np.concatenate([x, [0.5000002], np.linspace(x.min(), x.max(), 97)])
        assert np.all(np.diff(curve["x"]) > 0)
        assert np.max(np.abs(np.interp(probe, curve["x"], curve["y"]) - fitted.predict(probe))) < 1e-9
