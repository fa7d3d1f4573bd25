"""The table printed when a search ends: every finished trial of the study, all engines."""
from tracking.leaderboard import collect, rank, render


def print_summary(tracker, study: str, engines) -> None:
    try:
        runs = tracker.trials(study=study)
    except Exception as exc:  # the search itself is over and saved; only the table is missing
        print(f"\nsummary unavailable: MLflow at {tracker.uri} did not answer ({type(exc).__name__}); "
              f"the trials are in the Optuna study and the spool", flush=True)
        return
    counts: dict = {}
    for run in runs:
        status = "rung runs" if run.data.tags.get("fkp_rung") else run.data.tags.get("fkp_status")
        key = (run.data.tags.get("fkp_engine"), status)
        counts[key] = counts.get(key, 0) + 1
    print(f"\nStudy {study!r}: " + ", ".join(f"{e} {s}: {n}" for (e, s), n in sorted(counts.items())))
    rows = rank(collect(tracker, study))
    if rows:
        print(render(rows[:15]), end="")
    for engine in engines:
        if getattr(engine, "objectives", ("rmse",)) != ("rmse",) and len(engine.objectives) > 1:
            print(f"\nPareto front ({', '.join(engine.objectives)}), Optuna:")
            for t in sorted(engine.pareto(study), key=lambda t: t.values[0]):
                vals = ", ".join(f"{o}={v:.4g}" for o, v in zip(engine.objectives, t.values))
                print(f"  trial #{t.number}: {vals}")
