"""The paper's grid for search.run: the rows asked for, and the tuned-CNN row (the best trial of a
short Keras Tuner search of `cnn`, study `paper-kt`, shared by every grid study on this store)."""
import json
import tempfile
from pathlib import Path

STUDY = "paper-kt"
COLUMN_KEYS = ("imputation", "augment")  # set by each grid column, not by the tuner


def grid(args, data, settings, params: dict, run_engine):
    """The grid's space for --rows (all by default); the tuned row runs its Keras Tuner search first."""
    from spaces import paper
    rows = args.rows or paper.ROWS
    tuned = tuned_cnn(args, data, settings, params, run_engine) if paper.TUNED in rows else None
    return paper.space(tuned, rows)


def tuned_cnn(args, data, settings, params: dict, run_engine) -> dict:
    import spaces
    from search.keras_tuner_engine import KerasTunerEngine
    from search.run import Budget
    from tracking.mlflow_tracker import Tracker
    tracker = Tracker("cnn", args.tracking_uri)
    budget = Budget(args.kt_trials, None, args.seed, STUDY)
    run_engine(KerasTunerEngine("random"), spaces.get("cnn"), tracker, data, settings, budget,
               {**params, "space": "cnn", "trials": args.kt_trials})
    finished = [r for r in tracker.trials(study=STUDY) if r.info.status == "FINISHED" and "rmse" in r.data.metrics]
    if not finished:
        from train.errors import UserError
        raise UserError(f"the Keras Tuner search behind the tuned-CNN row (study {STUDY!r}) finished no trial")
    best = min(finished, key=lambda r: r.data.metrics["rmse"])
    with tempfile.TemporaryDirectory() as tmp:
        config = json.loads(Path(tracker.client.download_artifacts(best.info.run_id, "config.json", tmp)).read_text())
    print(f"[paper] tuned CNN: Keras Tuner trial {best.data.tags['fkp_trial']} of study {STUDY!r} "
          f"(val RMSE {best.data.metrics['rmse']:.3f} px)", flush=True)
    return {k: v for k, v in config.items() if k not in COLUMN_KEYS}
