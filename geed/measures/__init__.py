"""Measures beside G-EED: sensitivity (Jacobian spectral norm, Lie derivative, the insensitivity
control), saliency (Moskalev et al.'s SI and the LI regulariser), hidden channel permutations."""
