"""The studio dataset, a Human3.6M stand-in (``studio_dataset_builder.Builder``); see README.md."""
