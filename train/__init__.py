"""The trial core: Kaggle-format data -> trained keypoint CNN -> RMSE, params, size, speed."""
