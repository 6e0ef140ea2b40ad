from ssl_emp.data.bank import ImageBank
from ssl_emp.data.datasets import LOADERS, DatasetNotFoundError, load_bank

__all__ = ["ImageBank", "LOADERS", "DatasetNotFoundError", "load_bank"]
