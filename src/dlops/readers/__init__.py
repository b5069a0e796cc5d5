"""Reading runs afterwards: find run dirs, compare them (`dlops report`), draw their curves.

Reads run dirs only through the contract (`dlops.rundir`) and the files it names; never imports
torch or the lifecycle of a run (`tests/test_architecture.py` checks it).
"""
