"""The classifier: shapes, metrics, and checkpoints that load under torch's safe loading."""

import lightning.pytorch as pl
import torch

from dlops.data.mnist import MNISTDataModule
from dlops.models.classifier import Classifier

MLP = {"_target_": "dlops.models.nets.MLP", "hidden_sizes": [16]}
CNN = {"_target_": "dlops.models.nets.CNN", "channels": [4, 8], "hidden_size": 16}
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.01}


def test_binary_and_multiclass_outputs():
    images = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    assert Classifier(MLP, ADAM, num_classes=2)(images).shape == (5,)
    assert Classifier(CNN, ADAM, num_classes=10)(images).shape == (5, 10)


def test_checkpoint_restores_under_weights_only_loading(tmp_path):
    dm = MNISTDataModule(batch_size=256, val_fraction=0.1, test_fraction=0.1)
    dm.setup()
    model = Classifier(MLP, ADAM, scheduler={"_target_": "torch.optim.lr_scheduler.StepLR",
                                            "_partial_": True, "step_size": 1},
                       num_classes=2, class_names=dm.class_names, class_weights=dm.class_weights)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)  # torch's safe loader: no pickled objects
    assert checkpoint["hyper_parameters"]["net"]["hidden_sizes"] == [16]
    restored = Classifier.load_from_checkpoint(path, weights_only=True)
    images = dm.splits["val"].images[:8]
    assert torch.allclose(restored.eval()(images), model.eval()(images))
    assert restored.hparams.class_names == ["no 3", "3"]
    assert trainer.callback_metrics["val_acc"] > 0.8


def test_fused_adam_trains_the_same_weights_as_plain_adam(tmp_path):
    """The fused optimizer step that conf/model/*.yaml sets is a speed-up, not a change of result."""
    weights = []
    for fused in (False, True):
        pl.seed_everything(0, verbose=False)
        dm = MNISTDataModule(batch_size=256, val_fraction=0.1, test_fraction=0.1)
        dm.setup()
        model = Classifier(MLP, {**ADAM, "fused": fused}, num_classes=2,
                           class_names=dm.class_names, class_weights=dm.class_weights)
        trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, default_root_dir=tmp_path)
        trainer.fit(model, datamodule=dm)
        assert trainer.optimizers[0].param_groups[0]["fused"] is fused
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(*weights, atol=1e-5)  # the kernels may round differently, no more


def test_a_plateau_scheduler_follows_the_runs_monitor_not_always_val_loss():
    model = Classifier({"_target_": "dlops.models.nets.MLP", "hidden_sizes": [4]},
                       {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1},
                       {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", "_partial_": True,
                        "mode": "max"}, monitor="val_acc")
    assert model.configure_optimizers()["lr_scheduler"]["monitor"] == "val_acc"
