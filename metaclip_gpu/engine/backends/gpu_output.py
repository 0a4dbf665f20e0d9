"""GPU results as cuDF: a MatchResult as a ``list<int32>`` Series (zero-copy over its arrays)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from metaclip_gpu.engine.match import MatchResult

_INT32_MAX = 2**31 - 1


def _plc_column_from_cupy(array: Any) -> Any:
    """A pylibcudf numeric column over a 1-D CuPy array (zero-copy; it keeps `array` alive)."""
    import pylibcudf as plc

    for factory in ("from_array", "from_cuda_array_interface", "from_cuda_array_interface_obj"):
        make = getattr(plc.Column, factory, None)
        if make is not None:
            return make(array)
    raise RuntimeError("this pylibcudf has no Column.from_array / from_cuda_array_interface")


def to_cudf_list(result: MatchResult) -> Any:
    """A cuDF ``list<int32>`` Series over a MatchResult (one row a text, its sorted entry ids).

    cuDF list offsets are int32: more than 2**31 - 1 ids in one result cannot be one list
    column. Split the texts (smaller partitions), or use `MatchResult.to_arrow()`, which falls
    back to a large_list.
    """
    import cudf
    import cupy
    import pylibcudf as plc

    offsets = cupy.asarray(result.offsets)
    n_texts = len(offsets) - 1
    total = int(offsets[-1])
    if total > _INT32_MAX or n_texts >= _INT32_MAX:
        raise OverflowError(
            f"{total:,} entry ids over {n_texts:,} texts do not fit a cuDF list column "
            f"(int32 offsets, at most {_INT32_MAX:,} ids and rows); match smaller partitions "
            "(e.g. dask_cudf map_partitions) or use MatchResult.to_arrow() for a large_list"
        )
    ids = cupy.ascontiguousarray(cupy.asarray(result.entry_ids)[:total], dtype=np.int32)
    offsets_col = _plc_column_from_cupy(cupy.ascontiguousarray(offsets, dtype=np.int32))
    values_col = _plc_column_from_cupy(ids)
    lists = plc.Column(
        plc.DataType(plc.TypeId.LIST), n_texts, None, None, 0, 0, [offsets_col, values_col]
    )
    return cudf.Series.from_pylibcudf(lists)
