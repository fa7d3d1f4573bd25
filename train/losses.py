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
        y_true = y_true[..., :ops.shape(y_pred)[-1]]  # a distillation's targets carry the teacher's after the labels
        mask = ops.logical_not(ops.isnan(y_true))
        diff = ops.where(mask, y_pred - ops.where(mask, y_true, 0.0), 0.0)
        self.sum_sq.assign_add(ops.sum(ops.square(diff)))
        self.count.assign_add(ops.sum(ops.cast(mask, "float32")))

    def result(self):
        return ops.sqrt(self.sum_sq / ops.maximum(self.count, 1.0))

    def reset_state(self):
        self.sum_sq.assign(0.0)
        self.count.assign(0.0)


@keras.saving.register_keras_serializable(package="fkp")
class DistilLoss(keras.losses.Loss):
    """Distillation: `alpha` x masked MSE to the labels (missing cells stay out) + (1 - alpha) x MSE to the
    teacher's soft targets on every cell, which fills in the keypoints a face lacks. The targets are the
    labels followed by the teacher's predictions (train.online_augment.dataset)."""

    def __init__(self, alpha: float = 0.5, name="distil_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.alpha = float(alpha)

    def call(self, y_true, y_pred):
        k = ops.shape(y_pred)[-1]
        labels, soft = y_true[..., :k], y_true[..., k:]
        return self.alpha * masked_mse(labels, y_pred) + (1.0 - self.alpha) * ops.mean(ops.square(y_pred - soft))

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}
