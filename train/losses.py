"""Loss and metric that ignore missing (NaN) keypoint cells; with complete labels they equal MSE/RMSE."""
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="fkp")
def masked_mse(y_true, y_pred):
    mask = ops.logical_not(ops.isnan(y_true))
    diff = ops.where(mask, y_pred - ops.where(mask, y_true, 0.0), 0.0)
    count = ops.maximum(ops.sum(ops.cast(mask, "float32")), 1.0)
    return ops.sum(ops.square(diff)) / count


@keras.saving.register_keras_serializable(package="fkp")
class MaskedRMSE(keras.metrics.Metric):
    """RMSE in pixels over labelled cells of the whole epoch (not a mean of batch RMSEs)."""

    def __init__(self, name="rmse", **kwargs):
        super().__init__(name=name, **kwargs)
        self.sum_sq = self.add_variable(shape=(), initializer="zeros", name="sum_sq")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        mask = ops.logical_not(ops.isnan(y_true))
        diff = ops.where(mask, y_pred - ops.where(mask, y_true, 0.0), 0.0)
        self.sum_sq.assign_add(ops.sum(ops.square(diff)))
        self.count.assign_add(ops.sum(ops.cast(mask, "float32")))

    def result(self):
        return ops.sqrt(self.sum_sq / ops.maximum(self.count, 1.0))

    def reset_state(self):
        self.sum_sq.assign(0.0)
        self.count.assign(0.0)
