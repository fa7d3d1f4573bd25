"""The paper's grid for search.run: the rows asked for, and the tuned-CNN row (the best trial of a
short Keras Tuner search of `cnn`, study `paper-kt-<key>`, shared by the grid studies of one data and budget)."""
import json
import tempfile
from pathlib import Path

STUDY = "paper-kt"
COLUMN_KEYS = ("imputation", "augment")  # set by each grid column, not by the tuner


def grid(args, data, settings, params: dict, key):
    """The grid's space for --rows (all by default); the tuned row runs its Keras Tuner search first."""
    from spaces import paper
    rows = args.rows or paper.ROWS
    tuned = tuned_cnn(args, data, settings, params, key) if paper.TUNED in rows else None
    return paper.space(tuned, rows, seeds=args.seeds, columns=args.columns, transfer_epochs=args.transfer_epochs)


def tuned_cnn(args, data, settings, params: dict, key) -> dict:
    import dataclasses

    import spaces
    from search.engine import Budget, run_engine
    from search.identity import StudyKey
    from search.keras_tuner_engine import KerasTunerEngine
    from tracking.mlflow_tracker import Tracker
    tracker = Tracker("cnn", args.tracking_uri)
    cnn = spaces.get("cnn")
    if args.kt_epochs:  # a search of the cnn space, under its own edge budget, at its own epochs
        settings = dataclasses.replace(settings, epochs=args.kt_epochs, max_params=cnn.max_params)
        key = StudyKey.of(data, settings)
    study = f"{STUDY}-{key.digest()}"  # one tuning per data and budget, shared by the grids that match
    budget = Budget(args.kt_trials, None, args.seed, study)
    stop = run_engine(KerasTunerEngine("random"), cnn, tracker, data, settings, budget,
                      {**params, "space": "cnn", "trials": args.kt_trials, "epochs": settings.epochs,
                       "max_params": settings.max_params}, key)
    if stop:  # the grid must not go on from a tuning cut short
        raise stop
    finished = [r for r in tracker.trials(study=study) if r.info.status == "FINISHED" and "rmse" in r.data.metrics]
    if not finished:
        from train.errors import UserError
        raise UserError(f"the Keras Tuner search behind the tuned-CNN row (study {study!r}) finished no trial")
    best = min(finished, key=lambda r: r.data.metrics["rmse"])
    with tempfile.TemporaryDirectory() as tmp:
        config = json.loads(Path(tracker.client.download_artifacts(best.info.run_id, "config.json", tmp)).read_text())
    print(f"[paper] tuned CNN: Keras Tuner trial {best.data.tags['fkp_trial']} of study {study!r} "
          f"(val RMSE {best.data.metrics['rmse']:.3f} px)", flush=True)
    return {k: v for k, v in config.items() if k not in COLUMN_KEYS}
