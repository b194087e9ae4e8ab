"""Data: the field's json formats, leave-one-out splits, synthetic catalogs, item embeddings."""

from letter_fast.data.formats import (
    DataFormatError,
    Dataset,
    code_token,
    codes_to_index,
    find_dataset_folder,
    index_to_codes,
    load_dataset,
    read_index_json,
    read_inter_json,
    read_item_json,
    resolve_data_root,
    validate_histories,
    write_index_json,
    write_inter_json,
    write_item_json,
)
from letter_fast.data.splits import (
    PAD,
    LeaveOneOutSplit,
    SequenceSamples,
    leave_one_out,
    split_dataset,
    training_windows,
)
from letter_fast.data.synthetic import make_synthetic_catalog, write_synthetic_catalog

__all__ = [
    "DataFormatError", "Dataset", "code_token", "codes_to_index", "find_dataset_folder", "index_to_codes",
    "load_dataset", "read_index_json", "read_inter_json", "read_item_json", "resolve_data_root",
    "validate_histories", "write_index_json", "write_inter_json", "write_item_json",
    "make_synthetic_catalog", "write_synthetic_catalog", "PAD", "LeaveOneOutSplit", "SequenceSamples",
    "leave_one_out", "split_dataset",
    "training_windows",
]
