"""Data sets: MNIST (continuous, dequantised, dynamic or static binarisation), sklearn's
8x8 digits, 2-D toys, tiny shakespeare, and your own image folders / arrays, all behind
one protocol (:class:`ArrayDataset` with a :class:`DataSpec`).

>>> from genzoo.data import load_dataset
>>> ds = load_dataset("mnist", "train", binarize="dynamic")
>>> x, y = ds.get_batch(torch.arange(64), torch.Generator().manual_seed(0))  # doctest: +SKIP
"""
from .base import ArrayDataset, DataSpec
from .datasets import (
    DatasetEntry,
    dataset_options,
    infer_dataset_from_path,
    list_datasets,
    load_dataset,
    register_dataset,
)
from .files import find_file
from .text import TextDataset
from .toys import TOY_LOG_PROB, TOYS

__all__ = [
    "ArrayDataset", "DataSpec", "TextDataset", "DatasetEntry", "load_dataset", "list_datasets",
    "dataset_options", "infer_dataset_from_path", "register_dataset", "find_file", "TOYS", "TOY_LOG_PROB",
]
