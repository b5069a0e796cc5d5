"""Train in a clone of dlops: `python train.py [overrides]`, the run `dlops train` makes (dlops/launch.py)."""
from dlops.launch import main

if __name__ == "__main__":
    main()
