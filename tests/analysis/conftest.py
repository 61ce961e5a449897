"""Tests of `analysis/`: agreement, acceptance tables, threshold selectors and `segqa analyze`."""
