"""The conventional pipeline: torchvision `MNIST`, per-item transforms, a DataLoader.

The same images and splits as dlops' MNIST datamodule, but every item goes through PIL,
`ToTensor` and `Normalize` in a `DataLoader` (what most Lightning templates do). Used as

    python train.py datamodule._target_=torchvision_mnist.PerItemMNISTDataModule ...

so that the model, trainer, loggers and callbacks are exactly those of a dlops run.
"""

from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import MNIST

from dlops.data.mnist import MNISTDataModule

# The shared Classifier normalises whole batches of 0-255 pixels itself, so Normalize here maps
# ToTensor's 0-1 back to 0-255: the per-item work is the templates', the model sees what it expects.
PER_ITEM = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.0,), (1 / 255,))])


class PerItemMNISTDataModule(MNISTDataModule):
    """dlops' MNIST splits served through torchvision `MNIST` datasets and DataLoaders."""

    def __init__(self, num_workers: int = 0, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.num_workers = num_workers

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = MNIST(self.data_dir, train=split == "train", transform=PER_ITEM)
        dataset.data = self.splits[split].images[:, 0]
        dataset.targets = self.splits[split].labels
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
