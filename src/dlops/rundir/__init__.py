"""The run-directory contract: what a run dir holds and how it is written, read and locked.

Standard library only. The lifecycle of a run (`dlops.lifecycle`) writes run dirs through it; the
readers (`dlops.readers`) read them through it; neither side reaches into the other.
"""
