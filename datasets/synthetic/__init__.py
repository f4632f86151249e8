"""The synthetic dataset (``synthetic_dataset_builder.Builder``); see README.md."""
