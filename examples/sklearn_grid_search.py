"""gradkern's MLPClassifier inside a scikit-learn pipeline and a two-worker grid search.

The README shows this; the tests run it. Prints the best cross-validated accuracy.
"""

import warnings

from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import gradkern as gk


def main() -> float:
    X, y = load_digits(return_X_y=True)
    pipe = make_pipeline(StandardScaler(),
                         gk.MLPClassifier(hidden_layer_sizes=(64,), max_iter=100, random_state=0))
    search = GridSearchCV(pipe, {"mlpclassifier__hidden_layer_sizes": [(32,), (64,)]},
                          cv=3, n_jobs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 100 epochs, on purpose
        search.fit(X, y)
    print(f"best cross-validated accuracy {search.best_score_:.4f} with "
          f"{search.best_params_} on backend {gk.backends.default_name()}")
    assert search.best_score_ > 0.9, search.best_score_
    return search.best_score_


if __name__ == "__main__":
    main()
