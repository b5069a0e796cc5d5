"""Tabular regression on scikit-learn's diabetes data (442 patients, 10 features), offline.

Plain Lightning classes that import nothing from dlops: they plug into `train.py` exactly as a
user's own do (`python train.py experiment=diabetes`). The model learns the data's facts it
needs (feature count, target mean and spread) from its config, `${data:NAME}` there.
"""

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class DiabetesData(L.LightningDataModule):
    """Disease progression one year on from age, sex, BMI, blood pressure and six serum values.

    A fixed random split into train/val/test; features standardised with the training split's
    statistics; targets in their own units, so errors read as progression points.
    """

    def __init__(self, batch_size: int = 32, val_fraction: float = 0.2, test_fraction: float = 0.2,
                 split_seed: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.sets: dict[str, TensorDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.sets:
            return
        from sklearn.datasets import load_diabetes

        features, targets = load_diabetes(return_X_y=True)
        x = torch.tensor(features, dtype=torch.float32)
        y = torch.tensor(targets, dtype=torch.float32)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.split_seed))
        n_test, n_val = round(len(x) * self.test_fraction), round(len(x) * self.val_fraction)
        parts = {"test": order[:n_test], "val": order[n_test:n_test + n_val],
                 "train": order[n_test + n_val:]}
        train_x = x[parts["train"]]
        mean, std = train_x.mean(0), train_x.std(0)
        self.sets = {name: TensorDataset((x[index] - mean) / std, y[index])
                     for name, index in parts.items()}

    @property
    def num_features(self) -> int:
        return self.sets["train"].tensors[0].shape[1]

    @property
    def target_mean(self) -> float:
        """The training targets' mean: what a model that learnt nothing would predict."""
        return self.sets["train"].tensors[1].mean().item()

    @property
    def target_std(self) -> float:
        return self.sets["train"].tensors[1].std().item()

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["train"], batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["val"], batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["test"], batch_size=self.batch_size)


class DiabetesRegressor(L.LightningModule):
    """A small MLP predicting the standardised target; logs MAE and RMSE in the target's units,
    beside the MAE of always predicting the training mean (`*_baseline_mae`)."""

    def __init__(self, num_features: int, target_mean: float, target_std: float,
                 hidden_size: int = 32, lr: float = 0.01, weight_decay: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(num_features, hidden_size), nn.ReLU(),
                                 nn.Linear(hidden_size, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted progression, in the target's units."""
        return self.net(x).squeeze(-1) * self.hparams.target_std + self.hparams.target_mean

    def _standardised_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = (y - self.hparams.target_mean) / self.hparams.target_std
        return nn.functional.mse_loss(self.net(x).squeeze(-1), target)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._standardised_loss(*batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> None:
        x, y = batch
        error = self(x) - y
        self.log_dict({
            f"{stage}_loss": self._standardised_loss(x, y),
            f"{stage}_mae": error.abs().mean(),
            f"{stage}_rmse": error.pow(2).mean().sqrt(),
            f"{stage}_baseline_mae": (y - self.hparams.target_mean).abs().mean(),
        }, on_step=False, on_epoch=True, batch_size=len(y))

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr,
                                weight_decay=self.hparams.weight_decay)
