"""Data sources for training and evaluation: toy 2-D points and images, one batching rule.

    source = toy_source("checkerboard", num_points=50000, data_key=k_data, batch_key=k_batch,
                        batch_size=256)
    source = image_source("cifar10", image_size=32, batch_size=128, batch_key=k_batch,
                          aug_key=k_aug, random_flip=True, uniform_dequantization=False,
                          centered=False)
    batch = source.train_batch(step)        # {"x", "label"}: this process's rows of batch `step`
    for batch in source.eval_batches(1024):  # {"x", "label", "mask"}: the test split, once
        ...
    with Prefetcher(source, first_step, steps_per_call, put) as batches:
        for step, device_batch in batches:
            ...

:data:`TOY_DATASETS` and :data:`IMAGE_DATASETS` list the names each constructor accepts.
"""

from sgm_jax.data.images import (
    IMAGE_DATASETS,
    ImageDataset,
    central_crop,
    image_source,
    load_split,
    resize_images,
)
from sgm_jax.data.prefetch import Prefetcher
from sgm_jax.data.source import (
    SPLITS,
    DataSource,
    Split,
    get_data_inverse_scaler,
    get_data_scaler,
    to_unit_interval,
)
from sgm_jax.data.toy import (
    EIGHT_GAUSSIANS_MEANS,
    EIGHT_GAUSSIANS_STD,
    NUM_TOY_POINTS,
    TOY_DATASETS,
    TOY_NUM_CLASSES,
    checkerboard,
    eight_gaussians,
    eight_gaussians_score,
    get_toy_dataset,
    make_toy_dataset,
    moons,
    spiral_arms,
    spirals,
    toy_source,
)

__all__ = [
    "IMAGE_DATASETS", "ImageDataset", "central_crop", "image_source", "load_split",
    "resize_images", "Prefetcher", "SPLITS", "DataSource", "Split", "get_data_inverse_scaler",
    "get_data_scaler", "to_unit_interval", "EIGHT_GAUSSIANS_MEANS", "EIGHT_GAUSSIANS_STD",
    "NUM_TOY_POINTS", "TOY_DATASETS", "TOY_NUM_CLASSES", "checkerboard", "eight_gaussians",
    "eight_gaussians_score", "get_toy_dataset", "make_toy_dataset", "moons", "spiral_arms",
    "spirals", "toy_source",
]
