"""Images in: built-in datasets and image files, preprocessing, splits, and the conversions to
the model range."""

from bench.data.builtin import (  # noqa: F401
    read_idx,
    synthetic_split,
)
from bench.data.datasets import (  # noqa: F401
    load_dataset,
    split_pool,
    stratified_subset,
)
from bench.data.images import (  # noqa: F401
    DatasetNotFound,
    DeviceMemoryError,
    ImageData,
    Split,
    model_batch,
    on_device,
    to_model_range,
    to_unit_range,
)
