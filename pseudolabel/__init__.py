"""pseudolabel: instance masks from cheap annotations with prompted foundation models."""

__version__ = "0.1.0"
