"""Mask geometry both formats share: rasterising shapes, COCO RLE, mask → polygons, instances.

It stands below the mask-zip format (:mod:`smaskd.smask`) and the JSON formats
(:mod:`smaskd.annotations`), which are peers and never import each other; everything here
knows only :mod:`smaskd.model`, :mod:`smaskd.errors` and :mod:`smaskd.pngio` (the layers are
checked by ``lint-imports``, see ``[tool.importlinter]`` in pyproject.toml).
"""
