"""Items built again at every access, for datasets too large to hold as objects.

Why a module of its own: the streamed JSON readers (``streamed.py``), the CVAT bundle reader
(``cvat/bundle.py``) and the export's read of everything else (``detect.py``, items kept
pickled: :class:`CompactItems`) all hand the export a sequence whose items are rebuilt from
what they keep (file offsets, keyframes, pickles); no format reader should import another to
share it.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import overload

from smaskd.model import Item

__all__ = ["CompactItems", "RebuiltItems"]


class RebuiltItems(Sequence[Item]):
    """Items built again at every access: ``build(i)`` makes item ``i`` from what ``keeps``.

    ``first_pass``, when given, yields every item once, in order, checking each as the
    whole-file reader would; it runs as the first iteration (an export's plan), so the
    file is not parsed once more just to be checked. Any other access finishes it first.
    """

    def __init__(self, count: int, build: Callable[[int], Item], keeps: object,
                 first_pass: Iterator[Item] | None = None) -> None:
        self._count = count
        self._build = build
        self._keeps = keeps  # the open file (or stored blobs) as long as the items can be read
        self._first_pass = first_pass
        self._failed: BaseException | None = None

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> Item: ...

    @overload
    def __getitem__(self, index: slice) -> list[Item]: ...

    def __getitem__(self, index):
        self._finish_first_pass()
        if isinstance(index, slice):
            return [self._build(i) for i in range(*index.indices(self._count))]
        if not -self._count <= index < self._count:
            raise IndexError(index)
        return self._build(index % self._count)

    def __iter__(self) -> Iterator[Item]:
        if self._first_pass is not None and self._failed is None:
            first, self._first_pass = self._first_pass, None
            while True:
                try:
                    item = next(first)
                except StopIteration:
                    return
                except BaseException as e:
                    self._failed = e
                    close = getattr(self._keeps, "close", None)
                    if close is not None:  # unusable now; the error's traceback holds us
                        close()
                    raise
                try:
                    yield item
                except GeneratorExit:  # left early: the rest is checked on the next access
                    self._first_pass = first
                    raise
        self._finish_first_pass()
        for i in range(self._count):
            yield self._build(i)

    def _finish_first_pass(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self._first_pass is not None:
            for _ in self:
                pass


class CompactItems(RebuiltItems):
    """Items stored pickled; every access unpickles a fresh ``Item``.

    For a dataset read whole (LabelMe, a COCO results list, a zip's members): its pickles are
    about the size of its JSON, ~6x less than the live objects an export would otherwise hold.
    """

    def __init__(self, items: Iterable[Item] = ()) -> None:
        blobs = [pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL) for item in items]
        super().__init__(len(blobs), lambda i: pickle.loads(blobs[i]), blobs)
