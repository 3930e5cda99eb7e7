"""smaskd: the CVAT Segmentation Mask format, as a library, a CLI and a watch-folder daemon."""

__version__ = "0.1.0"

__all__ = ["__version__"]
