"""smaskd: the CVAT Segmentation Mask format, as a library, a CLI and a watch-folder daemon."""

import os as _os

__version__ = "0.1.0"

#: Pixels per decoded image. OpenCV reads ``OPENCV_IO_MAX_IMAGE_PIXELS`` once, when cv2 loads,
#: and several smaskd modules import cv2 (pngio, rasterize, polygons). Setting it here, in the
#: package's first import, puts the cap in place before whichever of them loads cv2 first, in
#: the CLI, the daemon and its spawned workers alike. ``pngio`` also checks PNG headers
#: against this figure before OpenCV is called at all.
MAX_IMAGE_PIXELS = 1 << 28
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))

__all__ = ["MAX_IMAGE_PIXELS", "__version__"]
