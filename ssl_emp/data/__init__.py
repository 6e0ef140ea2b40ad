from ssl_emp.data.bank import ImageBank, fit_batch_size
from ssl_emp.data.datasets import (
    DEFAULT_ROOT,
    LOADERS,
    DatasetNotFoundError,
    UnreadableImageError,
    default_image_size,
    default_root,
    has_held_out_split,
    image_folder,
    load_bank,
)
from ssl_emp.data.stream import ImageFolderStream

__all__ = [
    "DEFAULT_ROOT",
    "ImageBank",
    "ImageFolderStream",
    "LOADERS",
    "DatasetNotFoundError",
    "UnreadableImageError",
    "default_image_size",
    "default_root",
    "fit_batch_size",
    "has_held_out_split",
    "image_folder",
    "load_bank",
]
