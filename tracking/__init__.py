"""MLflow tracking shared by every engine, the leaderboard and reports."""
