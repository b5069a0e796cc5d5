"""Lightning callbacks of dlops."""
