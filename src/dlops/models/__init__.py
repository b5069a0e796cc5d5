"""The classifier LightningModule and the plain nets it wraps."""
