"""Train one configuration and save model, config and metrics.

python -m train.fit --model manual --imputation masked --augment flip,rotate,shift --epochs 30 --data PATH --out DIR
"""
import argparse
import json
from pathlib import Path

from train.cli_args import add_training_flags, settings_from
from train.errors import UserError, cli
from train.impute import STRATEGIES
from train.models import MODELS


def load_config(path) -> dict:
    """A JSON or YAML config file, as `train.fit --config` and `search.run --config` take."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        if str(path).endswith((".yaml", ".yml")):
            import yaml
            config = yaml.safe_load(text)
        else:
            config = json.loads(text)
    except Exception as exc:  # both parsers' errors carry line and column
        raise UserError(f"{path}: not valid {'YAML' if str(path).endswith(('.yaml', '.yml')) else 'JSON'} ({exc})") from None
    if not isinstance(config, (dict, list)):
        raise UserError(f"{path}: expected a config object (or a list of them)")
    return config


def save_run(result, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(result.config, indent=2, sort_keys=True))
    (out / "metrics.json").write_text(json.dumps(result.metrics, indent=2, sort_keys=True))
    (out / "history.json").write_text(json.dumps(result.history))


def format_metrics(m: dict) -> str:
    scores = f"RMSE {m['rmse']:.3f} px" if m['rmse'] == m['rmse'] else "refit on training + validation faces"
    if m.get("test_images"):
        scores += f" | test RMSE {m['test_rmse']:.3f} px"
    return (f"{scores} | params {m['params']:,} | {m['mmacs']:.1f}M MACs | size {m['size_mb']:.2f} MB | "
            f"inference {m['inference_s_per_100']:.3f} s/100 images | latency {m['latency_ms']:.2f} ms | "
            f"trained {m['train_s']:.0f} s, {m['epochs']} epochs")


@cli
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m train.fit", description="Train one keypoint model.")
    ap.add_argument("--model", choices=MODELS, default=None)
    ap.add_argument("--config", help="JSON/YAML config file; flags given here override it")
    ap.add_argument("--imputation", choices=STRATEGIES, default=None)
    ap.add_argument("--augment", default=None, help="comma list of flip,rotate,shift,brightness,noise or 'none'")
    ap.add_argument("--weights", default=None, help="applications: imagenet or a local weights file")
    ap.add_argument("--out", required=True, help="folder for model.keras, config.json, metrics.json")
    add_training_flags(ap, epochs=30)
    ap.add_argument("--refit", action="store_true",
                    help="train on training + validation faces for exactly --epochs (no early stopping); the test "
                         "faces stay out and are scored (--test-fraction 0: train on every face)")
    args = ap.parse_args(argv)
    config = load_config(args.config) if args.config else {}
    if isinstance(config, list):
        raise UserError(f"{args.config}: train.fit takes one config; use search.run --engine manual for several")
    for key in ("model", "imputation", "augment", "weights"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    config.setdefault("model", "manual")

    from train import data as data_mod
    from train.trial import run_trial

    data = data_mod.load(args.data)
    settings = settings_from(args)
    out = Path(args.out)

    def progress(epoch, logs):
        score = f"train rmse {logs.get('rmse', float('nan')):.3f}" if settings.refit else \
            f"val_rmse {logs.get('val_rmse', float('nan')):.3f}"
        print(f"epoch {epoch + 1}/{settings.epochs}  loss {logs.get('loss', float('nan')):.2f}  {score} px", flush=True)

    result = run_trial(config, data, settings, on_epoch=progress, out_dir=out)
    save_run(result, out)
    print(format_metrics(result.metrics))
    print(f"saved {out / 'model.keras'}, config.json, metrics.json")


if __name__ == "__main__":
    main()
