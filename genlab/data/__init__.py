"""Datasets: 2-D toys, image sets and files, loaded by `load` into a Data with a DataSpec."""

from genlab.data import images, textures, toys  # noqa: F401  (importing registers the datasets)
from genlab.data.load import DataConfig, load, load_config
from genlab.data.spec import Data, DataSpec

__all__ = ["Data", "DataConfig", "DataSpec", "load", "load_config"]
