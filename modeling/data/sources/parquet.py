"""`parquet`: a text column, read batch by batch."""

from __future__ import annotations

from modeling.common.errors import DataError
from modeling.common.skips import SkipLog
from modeling.data.sources.records import raise_as_data_error
from modeling.data.sources.spec import PARQUET_BATCH_ROWS, SourceSpec


def parquet_records(spec: SourceSpec, path: str, skips: SkipLog):
    import pyarrow as pa
    import pyarrow.parquet as pq

    column = spec.text_column or "text"
    try:
        parquet = pq.ParquetFile(path)
    except pa.ArrowException as error:
        raise DataError(f"{path}: not a readable Parquet file ({error})") from None
    schema = parquet.schema_arrow
    if column not in schema.names:
        raise DataError(f"{path}: no column '{column}' (columns found: {', '.join(schema.names)})")
    column_type = schema.field(column).type
    if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
        raise DataError(f"{path}: column '{column}' holds {column_type}, not text")
    row = 0
    batches = raise_as_data_error(path, parquet.iter_batches(PARQUET_BATCH_ROWS, columns=[column]))
    for batch in batches:
        for text in batch.column(0).to_pylist():
            yield f"{path}:row {row}", text
            row += 1
