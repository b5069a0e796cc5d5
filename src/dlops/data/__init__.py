"""Datamodules that hold images as uint8 tensors in memory and serve sliced batches."""
