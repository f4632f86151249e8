"""The UP-3D dataset (``up3d_dataset_builder.Builder``); see README.md."""
