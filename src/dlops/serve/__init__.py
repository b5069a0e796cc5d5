"""Serve an exported run over HTTP with onnxruntime. Nothing under here imports torch."""
