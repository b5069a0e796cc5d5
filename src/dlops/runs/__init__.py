"""The run-directory contract: where runs live and what `summary.json` says about them."""
