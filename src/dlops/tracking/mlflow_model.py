"""The exported model in MLflow: the run's ONNX export logged to its MLflow run (ONNX flavour,
with its signature) and, when asked, registered in the model registry, so that MLflow's own tools
(`mlflow.pyfunc.load_model`, `mlflow models serve`) take it from there."""

from pathlib import Path
from typing import Any

from dlops.errors import ConfigError
from dlops.tracking.mlflow_logger import FROM_CONFIG, check_server

MODEL_NAME = "model"  # the logged model's name in its run


def onnx_signature(model: Any) -> Any:
    """The MLflow signature of an ONNX model, from its graph: tensor specs with a dynamic batch (-1)."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec
    from onnx.helper import tensor_dtype_to_np_dtype

    def schema(values: Any) -> Any:
        specs = []
        for value in values:
            tensor = value.type.tensor_type
            shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
            specs.append(TensorSpec(np.dtype(tensor_dtype_to_np_dtype(tensor.elem_type)), shape, value.name))
        return Schema(specs)

    return ModelSignature(inputs=schema(model.graph.input), outputs=schema(model.graph.output))


def execution_providers() -> list[str]:
    """onnxruntime's providers for the logged model: CUDA where this machine's onnxruntime has it
    (MLflow's default names it always, and warns on every load where it is missing), then CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def log_onnx_model(entry: dict[str, Any], onnx_file: Path, register_as: str | None) -> str:
    """Log `onnx_file` to the MLflow run `entry` describes (summary.json's `mlflow`), with its
    signature, registering it as `register_as` when given; record its URI in `entry`, return a
    line saying where it went."""
    import mlflow
    import mlflow.onnx
    import onnx
    from mlflow.exceptions import MlflowException

    uri, source = entry["tracking_uri"], entry.get("tracking_uri_from", FROM_CONFIG)
    check_server(uri, source)
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(experiment_id=entry["experiment_id"])  # the logged model's experiment
        model = onnx.load(str(onnx_file))
        info = mlflow.onnx.log_model(model, name=MODEL_NAME, run_id=entry["run_id"],
                                     signature=onnx_signature(model), registered_model_name=register_as,
                                     save_as_external_data=False, await_registration_for=60,
                                     onnx_execution_providers=execution_providers(),
                                     # the flavour's own pinned onnx + onnxruntime: MLflow would
                                     # otherwise infer them, 18 of the 20 s this call took here
                                     pip_requirements=mlflow.onnx.get_default_pip_requirements())
    except MlflowException as exc:
        reason = str(getattr(exc, "message", exc)).splitlines()[0]
        raise ConfigError(f"the ONNX model in {onnx_file.parent} could not be logged to the MLflow run "
                          f"{entry['run_id']} in {uri}: {reason}") from None
    entry["model_uri"] = info.model_uri
    said = f"logged the ONNX model to MLflow run {entry['run_id']} in {uri}: {info.model_uri}"
    if register_as:
        entry["registered_model"] = {"name": register_as, "version": info.registered_model_version}
        said += f", registered as {register_as} version {info.registered_model_version}"
    return said
