"""genlab: deep generative models of the course notes behind one API, one Trainer and one CLI."""

from genlab import data, metrics, models
from genlab.errors import GenlabError
from genlab.train import Trainer, load_run

__version__ = "0.1.0"

__all__ = ["data", "models", "metrics", "Trainer", "load_run", "GenlabError", "__version__"]
