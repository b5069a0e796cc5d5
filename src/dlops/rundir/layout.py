"""The name of every file dlops writes in a run dir and a sweep dir, defined once."""

from pathlib import Path

# in a run dir
SUMMARY = "summary.json"
TRACEBACK = "traceback.txt"
LOCK = ".dlops.lock"
LOG = "train.log"
HYDRA_DIR = ".hydra"
HYDRA_CONFIG = Path(HYDRA_DIR) / "config.yaml"
HYDRA_OVERRIDES = Path(HYDRA_DIR) / "overrides.yaml"
HYDRA_RUNTIME = Path(HYDRA_DIR) / "hydra.yaml"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = Path(CHECKPOINTS) / "last.ckpt"
METRICS_CSV = Path("csv") / "metrics.csv"
CSV_HPARAMS = Path("csv") / "hparams.yaml"  # the config the CSV logger was given
PLOTS = "plots"
LEARNING_CURVES = Path(PLOTS) / "learning_curves.png"

# written after training, each in a folder of its own (dlops eval, predict, export)
EVAL = "eval"  # eval/<date>_<time>/metrics.json, ...
EVAL_METRICS = "metrics.json"
PREDICT = "predict"  # predict/<date>_<time>/predictions.csv
EXPORT = "export"
EXPORT_MODEL = Path(EXPORT) / "model.onnx"
EXPORT_INFO = Path(EXPORT) / "model.json"

# in a sweep dir
MULTIRUN = "multirun.yaml"
MULTIRUN_ORIGINAL = "multirun.original.yaml"
SWEEP_CSV = "summary.csv"
SWEEP_MD = "summary.md"
BEST = "best.json"
REFUSED = "refused.json"  # jobs whose resume was refused, by run dir (any worker process writes it)
