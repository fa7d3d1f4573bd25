"""The engine registry: one line per engine. `search.run --engine NAME` looks names up here."""
from search.keras_tuner_engine import KerasTunerEngine
from search.manual_engine import ManualEngine
from search.optuna_engine import OptunaEngine

ENGINES = {engine.name: engine for engine in (ManualEngine, OptunaEngine, KerasTunerEngine)}
