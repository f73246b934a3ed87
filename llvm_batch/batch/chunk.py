"""One chunk of input rows in flight: which rows are finished, and which await their commit."""

from __future__ import annotations

import pyarrow as pa

from .checkpoint import ROW_COLUMN
from .columns import RowResult, result_arrays, result_names


class Chunk:
    """Rows ``[start, start + len(batch))`` of the input, as they finish and get committed."""

    def __init__(
        self,
        index: int,
        start: int,
        batch: pa.RecordBatch,
        *,
        already_done: int,
        prefix: str,
    ) -> None:
        self.index = index
        self.start = start
        self.batch = batch
        self.prefix = prefix
        self.results: dict[int, RowResult] = {}
        self.remaining = batch.num_rows - already_done
        self.unflushed: list[int] = []
        self.first_unflushed_at: float | None = None

    @property
    def complete(self) -> bool:
        """Every row not committed before is finished."""
        return bool(self.remaining == 0)

    def finish(self, offset: int, result: RowResult, now: float) -> None:
        self.results[offset] = result
        self.remaining -= 1
        self.unflushed.append(offset)
        if self.first_unflushed_at is None:
            self.first_unflushed_at = now

    def take_unflushed(self) -> pa.Table:
        """The finished, uncommitted rows as a part table (input, results, row number)."""
        offsets = sorted(self.unflushed)
        self.unflushed = []
        self.first_unflushed_at = None
        results = [self.results.pop(offset) for offset in offsets]
        if len(offsets) == self.batch.num_rows:
            rows = self.batch
        else:
            rows = self.batch.take(pa.array(offsets, pa.int64()))
        table = pa.Table.from_batches([rows])
        for name, array in zip(result_names(self.prefix), result_arrays(results), strict=True):
            table = table.append_column(name, array)
        row_numbers = pa.array([self.start + offset for offset in offsets], pa.int64())
        return table.append_column(ROW_COLUMN, row_numbers)
