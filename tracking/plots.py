"""PNGs: a trial's learning curve and predicted vs true keypoints on a few faces; a final stage's models."""
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


def predictions(images, y_true, y_pred, path, n: int = 6, faces: str = "Validation faces") -> None:
    n = min(n, len(images))
    fig, axes = plt.subplots(1, n, figsize=(2 * n, 2.3), dpi=80, squeeze=False)
    for ax, img, t, p in zip(axes[0], images[:n], y_true[:n], y_pred[:n]):
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        ax.scatter(t[0::2], t[1::2], s=12, c="lime", label="true")
        ax.scatter(p[0::2], p[1::2], s=12, c="red", marker="x", label="predicted")
        ax.axis("off")
    axes[0][0].legend(loc="lower left", fontsize=6)
    fig.suptitle(f"{faces}: true (green) and predicted (red) keypoints", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def final_models(models: dict, shipped: str, path) -> None:
    """A final stage's models side by side: test RMSE (bars) and parameters (labels); the shipped one marked."""
    names = list(models)
    rmse = [models[n]["test_rmse"] for n in names]
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(names) + 1.5), 3.4), dpi=80)
    bars = ax.bar(range(len(names)), rmse, color=["tab:red" if n == shipped else "tab:blue" for n in names])
    for bar, n in zip(bars, names):
        ax.annotate(f"{models[n]['params'] / 1000:.0f}K", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(min(rmse) * 0.9, max(rmse) * 1.05)
    ax.set_ylabel("test RMSE (px)")
    ax.set_title("Final stage: each model on the test split (red: shipped; labels: params)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
