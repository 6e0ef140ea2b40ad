from ssl_emp.data.bank import ImageBank
from ssl_emp.data.datasets import LOADERS, DatasetNotFoundError, UnreadableImageError, load_bank
from ssl_emp.data.stream import ImageFolderStream

__all__ = ["ImageBank", "ImageFolderStream", "LOADERS", "DatasetNotFoundError", "UnreadableImageError", "load_bank"]
