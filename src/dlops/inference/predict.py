"""`dlops predict RUN INPUT...`: class probabilities for image files, as a CSV.

Image classifiers read the files with the decoder training used (dlops.serve.images);
other models predict through their `predict_step` on the datamodule's `predict_dataloader`.
"""

import csv
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlops.errors import ConfigError
from dlops.inference.classify import ClassProbabilities, is_image_classifier
from dlops.inference.outdir import new_output_dir, write_out
from dlops.inference.restore import Restored, restore
from dlops.rundir import atomic, layout
from dlops.serve.images import ImageError, decode_image, image_files

BATCH = 512


def read_images(files: list[Path], input_shape: list[int]) -> torch.Tensor:
    """uint8 `(N, C, H, W)` pixels of `files` decoded as training decodes an image folder, or
    ConfigError naming the first unreadable one."""
    channels, height, width = input_shape
    arrays = []
    for file in files:
        try:
            arrays.append(decode_image(file, "L" if channels == 1 else "RGB", (height, width))[0])
        except ImageError as exc:
            raise ConfigError(f"cannot read image {file}: {exc}. Remove it or leave it out.") from None
    return torch.from_numpy(np.stack(arrays))


def class_probabilities(model: Any, pixels: torch.Tensor) -> torch.Tensor:
    """`(N, num_classes)` probabilities of a classifier for raw pixels, in batches of BATCH."""
    probabilities = ClassProbabilities(model).eval()
    with torch.inference_mode():
        return torch.cat([probabilities(pixels[i : i + BATCH]) for i in range(0, len(pixels), BATCH)])


def predict_run(run_dir: str | Path, inputs: list[str], ckpt: str = "best", out: str | None = None) -> str:
    """Write the predictions CSV (to `out`, `-` for stdout, else RUN/predict/<time>/predictions.csv)."""
    files = image_files(inputs) if inputs else []
    restored = restore(run_dir, ckpt)
    if not is_image_classifier(restored.model):
        header, rows = predict_with_datamodule(restored, inputs)
    elif not files:
        raise ConfigError("name the image files or folders to predict, e.g. dlops predict RUN digits/test")
    else:
        names = list(restored.model.hparams.class_names)
        probs = class_probabilities(restored.model, read_images(files, restored.model.hparams.input_shape))
        header = ["path", "predicted", *(f"p_{name}" for name in names)]
        rows = [[str(file), names[int(p.argmax())], *(f"{v:.9g}" for v in p.tolist())]
                for file, p in zip(files, probs, strict=True)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    if out == "-":
        sys.stdout.write(buffer.getvalue())
        return "-"
    if out:
        return str(write_out(Path(out), buffer.getvalue().encode()))
    with new_output_dir(restored.run_dir / layout.PREDICT) as folder:
        atomic.write_bytes(folder / "predictions.csv", buffer.getvalue().encode())
    return str(folder / "predictions.csv")


def predict_with_datamodule(restored: Restored, inputs: list[str]) -> tuple[list[str], list[list[Any]]]:
    """Rows of the model's `predict_step` outputs over the datamodule's `predict_dataloader`."""
    from dlops import lightning
    from dlops.inference.evaluate import test_trainer

    model, datamodule = restored.model, restored.datamodule
    kind = type(model).__name__
    if type(datamodule).predict_dataloader is lightning.module().LightningDataModule.predict_dataloader:
        raise ConfigError(
            f"{kind} is not an image classifier (predict reads image files for models with "
            f"hyperparameters class_names and input_shape and a probabilities() method), and its "
            f"datamodule {type(datamodule).__name__} has no predict_dataloader. Add one (and a "
            f"predict_step to {kind}) to predict with it.")
    if inputs:
        raise ConfigError(f"{kind} predicts through its datamodule's predict_dataloader, which "
                          f"chooses the inputs; leave out {' '.join(inputs)}.")
    datamodule.setup("predict")
    trainer = test_trainer(restored.cfg, restored.run_dir / layout.PREDICT)
    outputs = trainer.predict(model, datamodule=datamodule)
    rows = []
    for batch in outputs or []:
        values = torch.as_tensor(batch).detach().cpu()
        values = values.reshape(len(values), -1) if values.ndim else values.reshape(1, 1)
        rows += [[len(rows) + i, *(f"{v:.9g}" for v in row.tolist())] for i, row in enumerate(values)]
    width = max((len(row) - 1 for row in rows), default=0)
    return ["index", *(f"output_{i}" for i in range(width))], rows
