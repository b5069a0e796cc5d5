"""Examples of bring-your-own classes: plain Lightning code that imports nothing from dlops."""
