"""python -m search.archive: carry a study to another machine, where it resumes, ranks and finalizes.

    python -m search.archive save --study NAME FILE.jsonl.gz     # from this machine's stores
    python -m search.archive load FILE.jsonl.gz                  # into another's (or a server's)

The file holds the Optuna study (its trials, rung values, promotions and its clock, as Optuna's own journal
lines) and the study's MLflow runs: tags, params, every metric's history and their small text artifacts
(config.json, metrics.json). Model files and plots stay behind: a resumed search, `tracking.leaderboard` and
`search.finalize` need none of them (finalize retrains), but `--export-best` needs the winner's model, so
export before you archive. Run ids are new where the runs land; every reference to them (parent runs, the
search's best run, the trials' `mlflow_run_id`) is rewritten. Keras Tuner and manual-engine stores are not
carried.
"""
from __future__ import annotations

import argparse
import gzip
import json
import tempfile
from pathlib import Path

from train.errors import UserError, cli

FORMAT = 1
TEXT = (".json", ".txt", ".yaml", ".yml", ".csv", ".md")
MAX_TEXT = 256 * 1024


def _runs(tracker, study: str) -> list:
    """The study's search runs first (their trials point at them), then its trial runs."""
    searches, trials = tracker.searches(study), tracker.trials(study=study)
    if len(searches) >= 100 or len(trials) >= 5000:  # the trackers' pages: more would be cut off unseen
        raise UserError(f"study {study!r} has more runs than one page of MLflow's search holds: not carried")
    return [*searches, *trials]


def _record(client, run, tmp: Path) -> dict:
    info, data = run.info, run.data
    metrics = [[m.key, m.value, m.timestamp, m.step] for key in data.metrics
               for m in client.get_metric_history(info.run_id, key)]
    artifacts = {}
    for item in client.list_artifacts(info.run_id):
        if not item.is_dir and item.path.endswith(TEXT) and (item.file_size or 0) <= MAX_TEXT:
            local = client.download_artifacts(info.run_id, item.path, str(tmp))
            artifacts[item.path] = Path(local).read_text()
    # the logged-model history names models that stay behind
    tags = {k: v for k, v in data.tags.items() if k != "mlflow.log-model.history"}
    return {"kind": "run", "run_id": info.run_id, "name": info.run_name, "status": info.status,
            "start_time": info.start_time, "end_time": info.end_time, "tags": tags,
            "params": dict(data.params), "metrics": metrics, "artifacts": artifacts}


def save(study: str, path: Path, space: str | None, storage: str | None, tracking_uri: str | None) -> dict:
    import optuna
    from optuna.storages.journal import JournalFileBackend

    from search.optuna_engine import make_storage
    from tracking import stores
    from tracking.mlflow_tracker import Tracker
    source = make_storage(stores.optuna_url(storage))
    if study not in optuna.get_all_study_names(source):
        raise UserError(f"no Optuna study {study!r} in {stores.optuna_url(storage)}")
    own = optuna.load_study(study_name=study, storage=source).user_attrs.get("space")  # search/identity.py
    if space and own and space != own:
        raise UserError(f"study {study!r} searches space {own!r}, not --space {space!r}")
    space = own or space or "cnn"
    tracker = Tracker(space, tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        journal = Path(tmp) / "study.journal"
        optuna.copy_study(from_study_name=study, from_storage=source,
                          to_storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal))))
        lines = journal.read_text().splitlines()
        runs = [_record(tracker.client, run, Path(tmp)) for run in _runs(tracker, study)]
    linked = {t.user_attrs.get("mlflow_run_id") for t in optuna.load_study(study_name=study, storage=source).trials}
    missing = linked - {None} - {r["run_id"] for r in runs}
    if missing:  # a study whose runs are in another experiment or store would land without them
        raise UserError(f"study {study!r}: {len(missing)} trial run(s) (e.g. {sorted(missing)[0]}) are not in "
                        f"experiment {space!r} of {tracker.uri}: pass the study's --tracking-uri")
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    with gzip.open(part, "wt") as out:  # written whole, then renamed: a kill never leaves half an archive
        out.write(json.dumps({"kind": "header", "format": FORMAT, "study": study, "space": space}) + "\n")
        out.write(json.dumps({"kind": "optuna", "journal": lines}) + "\n")
        for run in runs:
            out.write(json.dumps(run) + "\n")
    part.replace(path)
    return {"trials": len(optuna.load_study(study_name=study, storage=source).trials), "runs": len(runs)}


def _read(path: Path) -> tuple[dict, list[str], list[dict]]:
    try:
        with gzip.open(path, "rt") as f:
            records = [json.loads(line) for line in f]
    except FileNotFoundError:
        raise UserError(f"{path}: no such archive") from None
    except (OSError, EOFError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a study archive (python -m search.archive save writes one): {exc}") from None
    header = records[0] if records else {}
    if (header.get("kind") != "header" or header.get("format") != FORMAT or len(records) < 2
            or records[1].get("kind") != "optuna"):
        raise UserError(f"{path}: not a study archive of format {FORMAT} (python -m search.archive save writes one)")
    return header, records[1]["journal"], records[2:]


def load(path: Path, storage: str | None, tracking_uri: str | None) -> dict:
    # read before the imports below: search.optuna_engine brings TensorFlow, whose start-up lines (printed on
    # some CPUs whatever TF_CPP_MIN_LOG_LEVEL says) would bury a bad file's one-line error
    header, journal, runs = _read(path)
    import optuna

    from search.optuna_engine import make_storage
    from tracking import stores
    from tracking.mlflow_tracker import Tracker
    study, target = header["study"], make_storage(stores.optuna_url(storage))
    if study in optuna.get_all_study_names(target):
        raise UserError(f"{path}: study {study!r} is already in {stores.optuna_url(storage)}: nothing loaded")
    tracker = Tracker(header["space"], tracking_uri)
    if _runs(tracker, study):
        raise UserError(f"{path}: study {study!r} already has MLflow runs in {tracker.uri}: nothing loaded")
    client = getattr(tracker.client, "_client", tracker.client)  # not spooled: a load fails where it cannot land
    new: dict[str, str] = {}
    try:
        _land_runs(client, tracker.experiment_id, runs, new)
        _land_study(study, target, journal, new)
    except BaseException:  # half a study would refuse the next load: take back what landed, then say why
        for made in new.values():
            client.delete_run(made)
        if study in optuna.get_all_study_names(target):
            optuna.delete_study(study_name=study, storage=target)
        raise
    return {"study": study, "trials": len(optuna.load_study(study_name=study, storage=target).trials),
            "runs": len(runs)}


def _land_runs(client, experiment_id: str, runs: list[dict], new: dict) -> None:
    """Each run made anew (ids into `new`); a run carried while it ran is closed as its process was: killed."""
    from mlflow.entities import Metric, Param
    for run in runs:  # searches come first, so a trial's parent is always mapped
        tags = {k: new.get(v, v) if k in ("mlflow.parentRunId", "best_run_id") else v for k, v in run["tags"].items()}
        running = run["status"] == "RUNNING"
        if running and tags.get("fkp_role") == "trial":
            tags.update(fkp_status="failed", error="carried by search.archive while it ran: trained again on resume")
        made = client.create_run(experiment_id, start_time=run["start_time"], tags=tags,
                                 run_name=run["name"]).info.run_id
        new[run["run_id"]] = made
        metrics = [Metric(*m) for m in run["metrics"]]
        params = [Param(k, v) for k, v in run["params"].items()]
        for i in range(0, len(params), 100):  # MLflow's limits per batch
            client.log_batch(made, params=params[i:i + 100])
        for i in range(0, len(metrics), 1000):
            client.log_batch(made, metrics=metrics[i:i + 1000])
        for name, text in run["artifacts"].items():
            client.log_text(made, text, name)
        status = ("FAILED" if tags.get("fkp_role") == "trial" else "KILLED") if running else run["status"]
        client.set_terminated(made, status, end_time=run["end_time"])
    for run in runs:  # a search's best_run_id names one of its trials, made after it
        if run["tags"].get("best_run_id") in new:
            client.set_tag(new[run["run_id"]], "best_run_id", new[run["tags"]["best_run_id"]])


def _land_study(study: str, target, journal: list[str], new: dict) -> None:
    """The Optuna study, its run ids rewritten; a trial carried while it ran is failed as interrupted, so the
    next search.run queues it again (optuna_engine.recover): no worker here will ever end it."""
    import re

    import optuna
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState
    text = "\n".join(journal) + "\n"
    if new:  # one pass: a new id is never rewritten again
        text = re.sub("|".join(map(re.escape, new)), lambda m: new[m.group(0)], text)
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "study.journal"
        file.write_text(text)
        optuna.copy_study(from_study_name=study, to_storage=target,
                          from_storage=optuna.storages.JournalStorage(JournalFileBackend(str(file))))
    landed = optuna.load_study(study_name=study, storage=target)
    for t in landed.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        landed._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        landed.tell(t.number, state=TrialState.FAIL)


@cli
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m search.archive", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("save", "load"))
    parser.add_argument("file", type=Path, help="the archive (.jsonl.gz)")
    parser.add_argument("--study", help="save: the study to carry")
    parser.add_argument("--space", help="save: the study's space (its MLflow experiment; default: the study's own)")
    parser.add_argument("--storage", help="Optuna storage URL (default: sqlite under mlruns/)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite under mlruns/)")
    args = parser.parse_args(argv)
    import os

    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in Journal" for each copy
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # not a bar per config.json
    if args.action == "save":
        if not args.study:
            raise UserError("save needs --study NAME")
        done = save(args.study, args.file, args.space, args.storage, args.tracking_uri)
        print(f"saved study {args.study!r}: {done['trials']} Optuna trials, {done['runs']} MLflow runs -> {args.file}")
    else:
        done = load(args.file, args.storage, args.tracking_uri)
        print(f"loaded study {done['study']!r}: {done['trials']} Optuna trials, {done['runs']} MLflow runs "
              f"from {args.file}; the same search command resumes it")


if __name__ == "__main__":
    main()
