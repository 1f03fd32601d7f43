"""Label and filter very large text collections with pretrained classifiers, on Dask, driven by Hydra."""

__version__ = "0.1.0"
