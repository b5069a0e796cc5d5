"""Export and serve models that are not image classifiers: a user's classifier whose batches are
dicts (code written into a folder outside the repo, run with --config-dir), exported from its
`example_input_array` and served with JSON rows, and the one message for such a model without one.
The bundled regression example is exported and served in test_byo.py."""

import json
import shutil
import textwrap
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from helpers import Server, clean_env, error_of, run_dirs, summary, train

from dlops.cli import main

pytestmark = pytest.mark.slow

CODE = '''
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset


class Rows(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"features": self.x[i], "label": self.y[i]}


class DictCancer(pl.LightningDataModule):
    """scikit-learn's breast-cancer table in batches that are dicts."""

    def __init__(self, batch_size=64):
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage=None):
        from sklearn.datasets import load_breast_cancer

        x, y = load_breast_cancer(return_X_y=True)
        x = torch.tensor(x, dtype=torch.float32)
        x = (x - x.mean(0)) / x.std(0)
        y = torch.tensor(y)
        self.sets = {"train": Rows(x[:400], y[:400]), "val": Rows(x[400:], y[400:])}

    def train_dataloader(self):
        return DataLoader(self.sets["train"], batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.sets["val"], batch_size=self.batch_size)

    def test_dataloader(self):
        return DataLoader(self.sets["val"], batch_size=self.batch_size)


class DictClassifier(pl.LightningModule):
    def __init__(self, features=30, lr=0.05, class_names=("malignant", "benign"), example=True):
        super().__init__()
        self.save_hyperparameters()
        self.linear = torch.nn.Linear(features, 2)
        if example:
            self.example_input_array = torch.zeros(2, features)

    def forward(self, x):
        return self.linear(x)

    def probabilities(self, logits):
        return torch.softmax(logits, dim=-1)

    def training_step(self, batch, batch_idx):
        loss = torch.nn.functional.cross_entropy(self(batch["features"]), batch["label"])
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self(batch["features"])
        self.log("val_loss", torch.nn.functional.cross_entropy(logits, batch["label"]))
        self.log("val_acc", (logits.argmax(-1) == batch["label"]).float().mean())

    def test_step(self, batch, batch_idx):
        self.log("test_acc", (self(batch["features"]).argmax(-1) == batch["label"]).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """Their package `dictmodel` and conf/ outside the repo, and one run of it."""
    root = tmp_path_factory.mktemp("any-model")
    (root / "proj" / "conf" / "datamodule").mkdir(parents=True)
    (root / "proj" / "conf" / "model").mkdir()
    (root / "proj" / "dictmodel.py").write_text(CODE)
    (root / "proj" / "conf" / "datamodule" / "dictcancer.yaml").write_text("_target_: dictmodel.DictCancer\n")
    (root / "proj" / "conf" / "model" / "dictclf.yaml").write_text(textwrap.dedent("""\
        _target_: dictmodel.DictClassifier
        features: 30
        example: true
        """))
    (root / "work").mkdir()
    env = clean_env()
    env["PYTHONPATH"] += f":{root / 'proj'}"
    train(root / "work", "--config-dir", str(root / "proj" / "conf"), "datamodule=dictcancer",
          "model=dictclf", "monitor=val_loss", "mode=min", "trainer.max_epochs=3", env=env)
    return root


def their_run(project: Path) -> Path:
    [run_dir] = run_dirs(project / "work")
    assert summary(run_dir)["status"] == "completed"
    return run_dir


def test_a_model_with_dict_batches_exports_from_its_example_input_and_serves_json_rows(project, capsys,
                                                                                       monkeypatch):
    monkeypatch.syspath_prepend(str(project / "proj"))
    monkeypatch.setenv("DLOPS_TRUSTED_PACKAGES", "dictmodel")  # their package: its config may build it
    monkeypatch.chdir(project / "work")
    run_dir = their_run(project)
    assert main(["export", str(run_dir)]) == 0, capsys.readouterr().err
    info = json.loads((run_dir / "export" / "model.json").read_text())
    assert info["input"]["shape"] == ["batch", 30] and info["output"]["shape"] == ["batch", 2]
    assert info["class_names"] == ["malignant", "benign"] and "decoder" not in info
    assert info["verification"]["passed"]
    source = info["verification"]["inputs"]
    assert source.startswith("DictClassifier.example_input_array, repeated to 33 rows"), source

    from sklearn.datasets import load_breast_cancer

    from dlops.inference.restore import restore

    x = torch.tensor(load_breast_cancer(return_X_y=True)[0], dtype=torch.float32)
    rows = ((x - x.mean(0)) / x.std(0))[400:410]
    with torch.inference_mode():
        expected = torch.softmax(restore(run_dir).model(rows), dim=-1).numpy()
    env = clean_env()
    env["PYTHONPATH"] += f":{project / 'proj'}"
    served = Server(run_dir, env=env)
    try:
        metadata = httpx.get(f"{served.url}/metadata").json()
        assert metadata["accepts"]["json"]["row_shape"] == [30] and "image" not in metadata["accepts"]
        answer = httpx.post(f"{served.url}/predict", json={"inputs": rows.tolist()})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert np.abs(np.asarray(body["outputs"]) - expected).max() <= 1e-5
        assert body["labels"] == [["malignant", "benign"][i] for i in expected.argmax(1)]
        first = dict(zip(["malignant", "benign"], expected[0].tolist(), strict=True))
        assert body["probabilities"][0] == pytest.approx(first)
        image = httpx.post(f"{served.url}/predict", files={"file": ("x.png", b"\x89PNG")})
        assert image.status_code == 415 and "this model takes no images" in image.json()["detail"]
        wrong = httpx.post(f"{served.url}/predict", json={"inputs": [[0.0] * 29]})
        assert wrong.status_code == 422 and "the model takes rows of shape [30]" in wrong.json()["detail"]
    finally:
        assert served.stop()[0] == 0


def test_a_model_with_dict_batches_and_no_example_input_gets_one_message(project, tmp_path, capsys,
                                                                         monkeypatch):
    monkeypatch.syspath_prepend(str(project / "proj"))
    monkeypatch.setenv("DLOPS_TRUSTED_PACKAGES", "dictmodel")  # their package: its config may build it
    monkeypatch.chdir(project / "work")
    copy = tmp_path / "run"  # the same run, its model built without example_input_array
    shutil.copytree(their_run(project), copy, ignore=shutil.ignore_patterns("export"))
    config = copy / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("example: true", "example: false"))
    assert main(["export", str(copy), "--format", "onnx"]) == 2
    err = error_of("export", capsys.readouterr().err)
    assert err.startswith("dlops export: error: cannot tell what DictClassifier.forward takes: its test "
                          "batches are dicts, not a tensor or a tuple starting with one. Set "
                          "self.example_input_array") and "Traceback" not in err
    assert not (copy / "export" / "model.onnx").exists()
