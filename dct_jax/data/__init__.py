"""Data: the record schema shared by every dataset builder, and input pipelines.

``dct_jax.data.schema`` is the one definition of a dataset record (fields,
shapes, units, frames) that the TFDS builders in ``datasets/`` write and the
grain pipelines read. Import submodules explicitly.
"""
