"""Images in: built-in datasets and image files, preprocessing, splits, the conversions to the model range."""

from bench.data.images import (  # noqa: F401
    Split,
    ImageData,
    DeviceMemoryError,
    on_device,
    to_model_range,
    model_batch,
    to_unit_range,
    DatasetNotFound,
)
from bench.data.datasets import (  # noqa: F401
    load_dataset,
    split_pool,
    stratified_subset,
)
from bench.data.builtin import (  # noqa: F401
    read_idx,
    synthetic_split,
)
