"""What `logger=mlflow` costs a run: import, making the SQLite store, opening it again, logging,
and logging (and registering) the exported ONNX model at the end.

    PYTHONPATH=src python bench/bench_mlflow.py [--repeats 3] [--epochs 20]

Each measurement runs as its own process (imports included), side by side in one run:
- `import mlflow` against an empty interpreter;
- the first run's setup on a new store (its tables are made once; later runs find them):
  open the store, make the experiment and the run, log the params;
- a later run's setup on that store (the same, with the tables there);
- one epoch's logging (5 metrics, as dlops' Classifier logs them) on the store;
- logging the ONNX model of the default MLP (784-100-2, 79k parameters, the graph built with
  onnx.helper: no torch) to the run with its signature and registering it, as `export=onnx
  logger.mlflow.register_as=NAME` does (importing onnx and mlflow.onnx included).
Prints the medians; the results also go to bench/results/bench_mlflow.json.
"""

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETUP = """
import sys, time
import mlflow  # measured on its own: the setup below is the store's work only
from dlops.tracking.mlflow_logger import MLFlowLogger
start = time.perf_counter()
logger = MLFlowLogger(sys.argv[1])
logger.log_hyperparams({"seed": 1})
print(time.perf_counter() - start)
epochs = int(sys.argv[2])
start = time.perf_counter()
for epoch in range(epochs):
    logger.log_metrics({"val_loss": 1 / (epoch + 1), "val_acc": 0.9, "val_auroc": 0.95, "epoch": epoch},
                       step=epoch)
    logger.log_metrics({"train_loss": 1 / (epoch + 1), "train_acc": 0.9, "epoch": epoch}, step=epoch)
print((time.perf_counter() - start) / epochs)
logger.finish("completed", None)
"""
MODEL = """
import sys, time
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from dlops.tracking.mlflow_logger import MLFlowLogger
from dlops.tracking.mlflow_model import log_onnx_model
folder = sys.argv[2]
rng = np.random.default_rng(0)
weights = [numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)
           for name, shape in (("w1", (784, 100)), ("b1", (100,)), ("w2", (100, 2)), ("b2", (2,)))]
graph = helper.make_graph(
    [helper.make_node("Flatten", ["pixels"], ["flat"]), helper.make_node("Gemm", ["flat", "w1", "b1"], ["h"]),
     helper.make_node("Relu", ["h"], ["r"]), helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"]),
     helper.make_node("Softmax", ["logits"], ["probabilities"])], "mlp",
    [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 1, 28, 28])],
    [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])], weights)
onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), f"{folder}/model.onnx")
logger = MLFlowLogger(sys.argv[1])
summary = {"run_dir": folder, "overrides": []}
logger.start(summary)
start = time.perf_counter()
log_onnx_model(summary["mlflow"], __import__("pathlib").Path(folder) / "model.onnx", "bench")
print(time.perf_counter() - start)
logger.finish("completed", None)
"""


def seconds(code: str, *args: str) -> list[float]:
    """Run `code` in a fresh interpreter; the numbers it prints, and its whole wall time last."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}).stdout
    return [float(line) for line in out.split()] + [time.perf_counter() - start]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    rows: dict[str, list[float]] = {k: [] for k in (
        "python_s", "import_mlflow_s", "new_store_setup_s", "existing_store_setup_s", "epoch_logging_s",
        "onnx_model_logging_s")}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            uri = f"sqlite:///{tmp}/mlflow.db"
            rows["python_s"].append(seconds("pass")[-1])
            rows["import_mlflow_s"].append(seconds("import mlflow")[-1])
            rows["new_store_setup_s"].append(seconds(SETUP, uri, str(args.epochs))[0])
            setup, per_epoch, _ = seconds(SETUP, uri, str(args.epochs))
            rows["existing_store_setup_s"].append(setup)
            rows["epoch_logging_s"].append(per_epoch)
            rows["onnx_model_logging_s"].append(seconds(MODEL, uri, tmp)[0])
    medians = {k: round(statistics.median(v), 4) for k, v in rows.items()}
    for key, value in medians.items():
        print(f"{key:24s} {value:8.4f}")
    result = {"medians": medians, "repeats": args.repeats, "epochs": args.epochs,
              "python": platform.python_version(), "machine": platform.machine()}
    out = ROOT / "bench" / "results" / "bench_mlflow.json"
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
