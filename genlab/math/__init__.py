"""Pure tensor functions (no state): densities, divergences, bounds, Jacobian penalties."""
