"""`hf`: a Hugging Face dataset id, streamed."""

from __future__ import annotations

from modeling.common.errors import DataError
from modeling.common.skips import SkipLog
from modeling.data.sources.records import bad_record, raise_as_data_error
from modeling.data.sources.spec import SourceSpec


def hf_records(spec: SourceSpec, skips: SkipLog):
    from datasets import load_dataset  # slow to import; only sources that need it pay

    column = spec.text_column or "text"
    label = f"source '{spec.name}': Hugging Face dataset '{spec.path}'"
    try:
        dataset = load_dataset(spec.path, name=spec.subset, split=spec.split, streaming=True)
    except Exception as error:  # datasets raises many types: not found, bad config, offline ...
        raise DataError(f"{label}: cannot load ({type(error).__name__}: {error})") from error
    for index, example in enumerate(raise_as_data_error(label, dataset)):
        where = f"{spec.path}[{spec.split}]:{index}"
        if column not in example:
            raise DataError(f"{label}: no column '{column}' (columns found: {', '.join(example)})")
        text = example[column]
        if text is not None and not isinstance(text, str):
            problem = f"column '{column}' holds {type(text).__name__}, not text"
            bad_record(spec, skips, where, problem)
            continue
        yield where, text
