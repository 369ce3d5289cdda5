"""Pictures: sample grids, 2-D scatter plots, loss curves, latent-space figures."""
