"""Ratio benchmarks against anchor libraries (nilearn, bctpy, pingouin, statsmodels), one process each."""
