"""Data: sliced batches, the bundled and torchvision MNIST sources, image folders."""


import pytest
import torch
from helpers import write_idx

from dlops.cli import main as dlops
from dlops.data.batches import TensorBatches
from dlops.data.image_folder import ImageFolderDataModule
from dlops.data.mnist import MNISTDataModule, load_bundled
from dlops.errors import ConfigError


def test_batches_cover_every_item_once_per_epoch():
    labels = torch.arange(103)
    epoch = [0]
    batches = TensorBatches(labels.view(-1, 1), labels, 10, shuffle=True, seed=7, epoch=lambda: epoch[0])
    first = torch.cat([y for _, y in batches])
    assert len(batches) == 11 and sorted(first.tolist()) == list(range(103))
    assert torch.equal(first, torch.cat([y for _, y in batches]))  # same epoch, same order
    epoch[0] = 1
    assert not torch.equal(first, torch.cat([y for _, y in batches]))  # next epoch reshuffles


def test_batches_split_evenly_across_ranks():
    labels = torch.arange(101)
    shares = [torch.cat([y for _, y in TensorBatches(labels, labels, 8, shuffle=True, seed=1, rank=r,
                                                     world_size=2)]) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 50
    assert not set(shares[0].tolist()) & set(shares[1].tolist())


def test_bundled_digits_are_real_mnist():
    images, labels = load_bundled()
    assert images.shape == (5000, 1, 28, 28) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == [500] * 10
    assert images.float().mean().item() == pytest.approx(0.13 * 255, rel=0.1)


def test_mnist_split_is_seeded_and_disjoint():
    a, b = MNISTDataModule(seed=1), MNISTDataModule(seed=2)
    a.setup()
    b.setup()
    for name in ("train", "val", "test"):
        assert torch.equal(a.splits[name].images, b.splits[name].images)  # split seed is fixed
    sizes = {k: len(s) for k, s in a.splits.items()}
    assert sum(sizes.values()) == 5000 and sizes["test"] == 750
    rows = lambda s: {bytes(x.numpy()) for x in s.images.flatten(1)}  # noqa: E731
    assert not rows(a.splits["train"]) & rows(a.splits["test"])
    assert set(a.splits["train"].labels.tolist()) == {0, 1}
    assert a.class_names == ["no 3", "3"] and a.class_weights[1] > 4 * a.class_weights[0]


def test_undersample_balances_every_split_as_the_seed_did():
    dm = MNISTDataModule(balance="undersample")
    dm.setup()
    for split in dm.splits.values():
        assert split.labels.float().mean().item() == 0.5
    assert dm.class_weights is None


def test_ten_digit_task():
    dm = MNISTDataModule(positive_digit=None)
    dm.setup()
    assert dm.num_classes == 10 and set(dm.splits["train"].labels.tolist()) == set(range(10))


def test_torchvision_source_reads_idx_files(tmp_path):
    images, labels = write_idx(tmp_path / "MNIST" / "raw", n_train=500, n_test=100)
    dm = MNISTDataModule(source="torchvision", data_dir=str(tmp_path), download=False,
                         positive_digit=None)
    dm.setup()
    assert len(dm.splits["test"]) == 100 and len(dm.splits["train"]) + len(dm.splits["val"]) == 500
    test_rows = {bytes(x.numpy()) for x in dm.splits["test"].images.flatten(1)}
    assert test_rows == {bytes(x.numpy()) for x in images[500:600].flatten(1)}


def test_torchvision_source_without_files_says_where_to_put_them(tmp_path):
    dm = MNISTDataModule(source="torchvision", data_dir=str(tmp_path), download=False)
    with pytest.raises(ConfigError, match="train-images-idx3-ubyte.*datamodule.data_dir"):
        dm.setup()


def test_make_dataset_then_image_folder(tmp_path, capsys):
    assert dlops(["make-dataset", str(tmp_path / "digits"), "--per-class", "10"]) == 0
    assert len(list((tmp_path / "digits" / "train" / "3").glob("*.png"))) == 8
    dm = ImageFolderDataModule(str(tmp_path / "digits"))
    dm.setup()
    assert dm.class_names == [str(d) for d in range(10)]
    assert dm.splits["train"].images.shape == (80, 1, 28, 28)
    assert dm.splits["val"] is dm.splits["test"]  # no val/: test doubles as validation
    assert dlops(["make-dataset", str(tmp_path / "digits")]) == 2  # refuses to overwrite
    assert "not empty" in capsys.readouterr().err


@pytest.mark.parametrize("damage,message", [
    ("missing", "does not exist"),
    ("mismatch", "class folders differ"),
    ("empty", "holds no images"),
    ("corrupt", "cannot read image"),
])
def test_bad_image_folders(tmp_path, damage, message):
    root = tmp_path / "digits"
    dlops(["make-dataset", str(root), "--per-class", "5"])
    if damage == "missing":
        root = tmp_path / "nowhere"
    elif damage == "mismatch":
        (root / "test" / "9").rename(root / "test" / "nine")
    elif damage == "empty":
        for f in (root / "train" / "4").iterdir():
            f.unlink()
    else:
        next((root / "train" / "2").iterdir()).write_bytes(b"not a png")
    with pytest.raises(ConfigError, match=message):
        ImageFolderDataModule(str(root)).setup()


def rows(split) -> list[bytes]:
    """Each example as bytes (pixels and label), to compare splits as multisets."""
    return [bytes(x.numpy()) + bytes([y]) for x, y in zip(split.images.flatten(1), split.labels.tolist(),
                                                          strict=True)]


def test_three_folds_are_stratified_disjoint_and_cover_the_pool_with_test_untouched():
    plain = MNISTDataModule()
    plain.setup()
    pool = sorted(rows(plain.splits["train"]) + rows(plain.splits["val"]))
    folds = [MNISTDataModule(folds=3, fold=i, seed=i) for i in range(3)]  # run seeds do not matter
    for dm in folds:
        dm.setup()
        assert sorted(rows(dm.splits["train"]) + rows(dm.splits["val"])) == pool
        assert torch.equal(dm.splits["test"].images, plain.splits["test"].images)
    vals = [rows(dm.splits["val"]) for dm in folds]
    assert sorted(sum(vals, [])) == pool  # disjoint, and together the whole pool
    assert max(map(len, vals)) - min(map(len, vals)) <= 1
    share = plain.splits["train"].labels.float().mean().item()  # the "3"s are ~10% of the pool
    for dm in folds:
        assert dm.splits["val"].labels.float().mean().item() == pytest.approx(share, abs=0.005)
    again = MNISTDataModule(folds=3, fold=1, seed=7)
    again.setup()
    assert torch.equal(again.splits["val"].images, folds[1].splits["val"].images)  # from split_seed


def test_image_folder_folds_leave_the_test_split_out_of_the_pool(tmp_path):
    assert dlops(["make-dataset", str(tmp_path / "digits"), "--per-class", "10"]) == 0
    dms = [ImageFolderDataModule(str(tmp_path / "digits"), folds=4, fold=i) for i in range(4)]
    for dm in dms:
        dm.setup()
        assert len(dm.splits["train"]) == 60 and len(dm.splits["test"]) == 20  # no val/: pool = train
        assert torch.bincount(dm.splits["val"].labels).tolist() == [2] * 10  # 8 per class, 4 folds
    vals = sorted(sum((rows(dm.splits["val"]) for dm in dms), []))
    assert len(vals) == 80 and not set(vals) & set(rows(dms[0].splits["test"]))


@pytest.mark.parametrize("folds,fold,message", [
    (3, 3, "datamodule.fold must be an integer from 0 to 2 with datamodule.folds=3, got 3"),
    (3, None, "datamodule.fold must be an integer from 0 to 2"),
    (1, 0, "datamodule.folds must be an integer >= 2"),
    (None, 1, "datamodule.fold=1 needs datamodule.folds"),
])
def test_bad_folds_get_one_message(folds, fold, message):
    with pytest.raises(ConfigError, match=message):
        MNISTDataModule(folds=folds, fold=fold)
