"""The COCO-DensePose dataset (``coco_densepose_dataset_builder.Builder``); see README.md."""
