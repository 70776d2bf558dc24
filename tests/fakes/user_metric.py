"""A user's metric file as Kaggle publishes one (`score(solution, submission, row_id_column_name)`, lower is
better): the text tests write beside a config as my_metric.py."""

MAE_METRIC_FILE = '''\
import numpy as np

higher_is_better = False


def score(solution, submission, row_id_column_name):
    """Mean absolute gap between the target and the predicted probability (Kaggle's signature)."""
    del solution[row_id_column_name]
    del submission[row_id_column_name]
    return float(np.mean(np.abs(solution.to_numpy() - submission.to_numpy())))
'''
