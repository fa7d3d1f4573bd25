"""The trial core: Kaggle-format data -> trained keypoint CNN -> RMSE, params, size, speed."""

from train import quiet_tf

quiet_tf.install()  # before any module of ours loads TensorFlow: its start-up lines would come before our own
