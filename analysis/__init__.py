"""Analysis: runs catalog, robust generalization gap, flatness-gap correlation and the figures of Wu et al. 2020."""
