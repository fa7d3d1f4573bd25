"""Flags shared by the CLIs that train (train.fit, search.run), and the split's with train.evaluate."""
from train.trial import TrialSettings

DEFAULT_DATA = "../shared/data/training.csv.gz"


def add_training_flags(ap, epochs: int) -> None:
    ap.add_argument("--data", default=DEFAULT_DATA, help=f"Kaggle-format CSV (default: {DEFAULT_DATA})")
    ap.add_argument("--epochs", type=int, default=epochs, help=f"max epochs per trial (default: {epochs or 5})")
    ap.add_argument("--patience", type=int, default=None, help="early-stopping patience in epochs (default: 5)")
    add_split_flags(ap)
    ap.add_argument("--copies", type=int, default=1, help="augmented copies per image and op")


def add_split_flags(ap) -> None:
    """The split of a file into training, validation and test faces (train/split.py): train.evaluate takes the
    same flags, so it can score exactly the faces a run held out."""
    ap.add_argument("--val-fraction", type=float, default=0.15,
                    help="faces for early stopping, pruning and selection (default: 0.15)")
    ap.add_argument("--test-fraction", type=float, default=0.15,
                    help="faces no engine ever sees, scored once per finished trial (default: 0.15)")
    ap.add_argument("--split", choices=["group", "random"], default="group",
                    help="group: near-identical faces stay on one side (default)")
    ap.add_argument("--seed", type=int, default=0,
                    help="the split's seed; in training also the weights' unless a step sets its own (default: 0)")


def settings_from(args, verbose: int = 0) -> TrialSettings:
    from train.errors import UserError
    if args.epochs < 1:
        raise UserError("--epochs must be at least 1")
    return TrialSettings(epochs=args.epochs, patience=5 if args.patience is None else args.patience, val_fraction=args.val_fraction,
                         test_fraction=args.test_fraction, split=args.split, seed=args.seed, copies=args.copies, verbose=verbose,
                         refit=bool(getattr(args, "refit", False)))
