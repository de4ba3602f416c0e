"""Training-history figure like the paper's Fig. 4: loss and pixel-accuracy curves, train vs validation."""

from __future__ import annotations

from pathlib import Path

from sarcoscope.fileio import atomic_write


def plot_history(history: list[dict[str, float]], path: Path) -> None:
    """Two panels (loss, accuracy) over epochs; the best (lowest validation loss) epoch is marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    best = min(history, key=lambda r: r["val_loss"])["epoch"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, key, title in (
        (axes[0], "loss", "Loss (0.5·Dice + 0.5·CE)"),
        (axes[1], "accuracy", "Pixel accuracy"),
    ):
        ax.plot(epochs, [r[f"train_{key}"] for r in history], "o-", ms=3, label=f"train_{key}")
        ax.plot(epochs, [r[f"val_{key}"] for r in history], "s-", ms=3, label=f"val_{key}")
        ax.axvline(best, color="grey", ls=":", lw=1, label=f"best epoch {best}")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
