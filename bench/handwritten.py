"""The floor: a hand-written PyTorch loop, uint8 tensors in memory, batches sliced from a shuffle.

It does the work of a dlops epoch without a framework: the same split, net, class-weighted loss,
optimizer and batch size, the running training loss and accuracy, and a validation pass.

    python bench/handwritten.py DATA_DIR --epochs 3 --out epochs.json

DATA_DIR holds MNIST/raw/*-ubyte as written by `common.make_data`.
"""

import argparse
import json
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from common import N_VAL, read_data

from dlops.models.nets import MLP


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden-sizes", type=int, nargs="+", default=[64, 128, 64])
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (data moved there once)")
    parser.add_argument("--bf16", action="store_true",
                        help="bf16 autocast, as trainer.precision=bf16-mixed")
    parser.add_argument("--fused", action="store_true", help="Adam's fused kernel (dlops' default)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    images, labels = (torch.from_numpy(a) for a in read_data(args.data_dir))
    images, labels = images.unsqueeze(1), labels.long()
    # the split of dlops' MNIST datamodule: shuffled with split_seed 1234, validation first
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1234))
    images, labels = images[order], labels[order]
    device = torch.device(args.device)
    images, labels = images.to(device), labels.to(device)
    val_x, val_y, train_x, train_y = images[:N_VAL], labels[:N_VAL], images[N_VAL:], labels[N_VAL:]

    pixels = train_x.float() / 255
    mean, std = pixels.mean().item(), pixels.std().item()
    scale, shift = 1 / (255 * std), -mean / std
    counts = torch.bincount(train_y, minlength=10).float()
    weights = counts.sum() / (len(counts) * counts)
    autocast = torch.autocast(device.type, torch.bfloat16) if args.bf16 else nullcontext()
    net = MLP((1, 28, 28), 10, args.hidden_sizes).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr, weight_decay=0.0, fused=args.fused)
    bs, n = args.batch_size, len(train_y)

    epochs = []
    for epoch in range(args.epochs):
        start, cpu_start = time.perf_counter(), time.process_time()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed + epoch))
        order = order.to(device)
        x_epoch, y_epoch = train_x[order], train_y[order]
        sums, count = torch.zeros(2, device=device), 0
        for i in range(0, n, bs):
            x, y = x_epoch[i : i + bs], y_epoch[i : i + bs]
            with autocast:
                logits = net(x.float() * scale + shift)
                loss = F.cross_entropy(logits, y, weight=weights)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                sums += torch.stack([loss * len(y), (logits.argmax(-1) == y).sum().float()])
                count += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_end = time.perf_counter()
        with torch.inference_mode(), autocast:
            logits = torch.cat([net(val_x[i : i + bs].float() * scale + shift)
                                for i in range(0, len(val_y), bs)]).float()
            val_loss = F.cross_entropy(logits, val_y, weight=weights).item()
            val_acc = (logits.argmax(-1) == val_y).float().mean().item()
        end = time.perf_counter()
        epochs.append({"epoch_s": end - start, "cpu_s": time.process_time() - cpu_start,
                       "train_s": train_end - start, "val_s": end - train_end,
                       "train_loss": (sums[0] / count).item(), "val_loss": val_loss,
                       "val_acc": val_acc})
        print(f"epoch {epoch}: {end - start:.2f}s, val_acc={val_acc:.4f}", flush=True)
    args.out.write_text(json.dumps({"threads": torch.get_num_threads(), "n_train": n,
                                    "n_val": len(val_y), "epochs": epochs}, indent=2))


if __name__ == "__main__":
    main()
