"""Per-trial PNGs: the learning curve and predicted vs true keypoints on a few validation faces."""
import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def learning_curve(history: dict, path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=80)
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    if history.get("rmse"):
        ax.plot(epochs, history["rmse"], marker="o", ms=3, label="train RMSE")
    if history.get("val_rmse"):
        ax.plot(epochs, history["val_rmse"], marker="o", ms=3, label="validation RMSE")
    ax.set_xlabel("epoch")
    ax.set_ylabel("RMSE (px)")
    ax.set_title("Learning curve", fontsize=10)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def predictions(images, y_true, y_pred, path, n: int = 6) -> None:
    n = min(n, len(images))
    fig, axes = plt.subplots(1, n, figsize=(2 * n, 2.3), dpi=80, squeeze=False)
    for ax, img, t, p in zip(axes[0], images[:n], y_true[:n], y_pred[:n]):
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        ax.scatter(t[0::2], t[1::2], s=12, c="lime", label="true")
        ax.scatter(p[0::2], p[1::2], s=12, c="red", marker="x", label="predicted")
        ax.axis("off")
    axes[0][0].legend(loc="lower left", fontsize=6)
    fig.suptitle("Validation faces: true (green) and predicted (red) keypoints", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
