"""The life of a run: compose, validate, fit, resume, signals, sweeps, DDP, and how runs end.

Writes run dirs only through `dlops.rundir`; never imported by the readers (`dlops.readers`).
"""
