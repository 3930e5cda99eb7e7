"""A CVAT task bundle (the four REST payloads of one task) → the model.

(Work in progress: the full reader lands shortly; the signature is fixed.)
"""

from __future__ import annotations

from typing import Any

from smaskd.errors import InputError
from smaskd.model import Dataset

__all__ = ["bundle_to_dataset", "is_bundle"]

BUNDLE_KEYS = ("task", "meta", "labels", "annotations")


def is_bundle(doc: Any) -> bool:
    """A task bundle has the four keys, ``annotations`` holding shapes and tracks."""
    return (
        isinstance(doc, dict)
        and all(k in doc for k in BUNDLE_KEYS)
        and isinstance(doc.get("annotations"), dict)
    )


def bundle_to_dataset(bundle: dict, source: str) -> Dataset:
    """A bundle dict → ``Dataset``; ``source`` names the file in errors."""
    raise InputError("CVAT task bundles are not read yet", source)
