"""scikit-learn estimators around ``fastten.fit``: ``NNLiftRegressor`` and
``NNLiftClassifier``.

Imported only explicitly (``from fastten.sklearn import NNLiftRegressor``):
``import fastten`` does not import scikit-learn. Needs scikit-learn >= 1.6
(``pip install fastten[sklearn]``), for ``validate_data`` and the
``__sklearn_tags__`` protocol.

The estimators follow scikit-learn's contract: ``__init__`` stores the
parameters of ``fastten.fit`` unchanged, ``fit`` checks the data with
scikit-learn's own utilities (so feature names, ``n_features_in_`` and the
error messages are those of every scikit-learn estimator) and leaves the
options to ``fastten.fit``, which checks them all before reading the data and
names the parameter in its errors.
"""


import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .nnlift import fit

__all__ = ["NNLiftRegressor", "NNLiftClassifier"]


def _generator(random_state):
    """What ``fastten.fit`` takes from an estimator's ``random_state``: None,
    an int or a numpy Generator pass through (fit checks them); a legacy
    ``numpy.random.RandomState`` (scikit-learn's own convention) gives a
    Generator seeded from one draw of it, so it advances as scikit-learn's
    estimators advance it and the same state gives the same network."""
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(np.iinfo(np.int32).max))
    return random_state


class _NNLiftBase(BaseEstimator):
    """The parameters shared by both estimators and the fit they run."""

    def __init__(self, n_hidden=10, *, activation="sigmoid", input_model="gaussian", init="tensor", method="auto",
                 bias_method="moments", control_variate="linear", cross_fit=False, refine=True, alpha=0.0,
                 early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=10, ridge=1e-8, max_iter=50, n_rounds=6, random_state=None, n_threads=None,
                 blas_threads=1, verbose=0):
        self.n_hidden = n_hidden
        self.activation = activation
        self.input_model = input_model
        self.init = init
        self.method = method
        self.bias_method = bias_method
        self.control_variate = control_variate
        self.cross_fit = cross_fit
        self.refine = refine
        self.alpha = alpha
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.ridge = ridge
        self.max_iter = max_iter
        self.n_rounds = n_rounds
        self.random_state = random_state
        self.n_threads = n_threads
        self.blas_threads = blas_threads
        self.verbose = verbose

    def _fit_network(self, X, y, task):
        """Run ``fastten.fit`` on checked data and set the fitted attributes."""
        params = self.get_params()
        n_hidden = params.pop("n_hidden")
        params["random_state"] = _generator(params["random_state"])
        network = fit(X, y, n_hidden, task=task, **params)
        self.network_ = network
        self.coefs_ = [network.A1, np.reshape(network.a2, (network.A1.shape[1], -1))]
        self.intercepts_ = [network.b1, np.atleast_1d(np.asarray(network.b2, dtype=np.float64))]
        self.n_iter_ = int(network.diagnostics["refinement_iterations"])
        self.loss_ = float(network.diagnostics["training_loss"])
        self.diagnostics_ = network.diagnostics
        return self

    def _outputs(self, X):
        """The network's outputs at the rows of X, checked against the fit."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self.network_.predict(X)


class NNLiftRegressor(RegressorMixin, _NNLiftBase):
    """A two-layer network f(x) = a2^T sigma(A1^T x + b1) + b2 fitted by
    NN-LIFT (``fastten.fit`` with ``task="regression"``), as a scikit-learn
    regressor.

    Parameters
    ----------
    n_hidden : int >= 1, default 10
        Hidden units k. The moments identify at most as many units as the
        inputs have dimensions (``diagnostics_["suggested_n_hidden"]`` is how
        many they support); the others start at random and only the
        refinement trains them.
    activation : str or fastten.activations.Activation, default "sigmoid"
        As in ``fastten.fit``, which checks this and the options below when
        ``fit`` is called (same defaults).
    input_model : {"gaussian", "standard", "product"} or ScoreFunction, \
default "gaussian"
        As in ``fastten.fit``.
    init : {"tensor", "random"}, default "tensor"
        As in ``fastten.fit``.
    method : {"auto", "orthogonal", "nonorthogonal", "power", "sketch"}, \
default "auto"
        As in ``fastten.fit``.
    bias_method : {"moments", "fourier", "zero"}, default "moments"
        As in ``fastten.fit``.
    control_variate : {"linear", "quadratic", "none"}, default "linear"
        As in ``fastten.fit``: the labels' control variate in the tensor
        stage's moments.
    cross_fit : bool, default False
        As in ``fastten.fit``: fit the control variate on one half of the
        rows and apply it to the other.
    refine : bool, default True
        As in ``fastten.fit``.
    alpha : float, default 0.0
        As in ``fastten.fit``: the L2 penalty of the refinement.
    early_stopping : bool, default False
        As in ``fastten.fit``.
    validation_fraction : float, default 0.1
        As in ``fastten.fit``; used with early_stopping.
    n_iter_no_change : int, default 10
        As in ``fastten.fit``; used with early_stopping.
    ridge : float, default 1e-8
        As in ``fastten.fit``: the penalty of the initial output layer.
    max_iter : int, default 50
        As in ``fastten.fit``: Levenberg-Marquardt iterations per round and
        stage.
    n_rounds : int, default 6
        As in ``fastten.fit``: refinement rounds on the subsample.
    random_state : None, int, numpy.random.Generator or \
numpy.random.RandomState, default None
        Drives every random choice of the fit. A RandomState (scikit-learn's
        legacy convention) is turned into a Generator seeded by one draw
        from it.
    n_threads : int or None, default None
        As in ``fastten.fit``: threads sharing each pass over the rows
        (None: every core the process may use); the result does not
        depend on it.
    blas_threads : int or None, default 1
        As in ``fastten.fit``.
    verbose : int >= 0 or bool, default 0
        As in ``fastten.fit``: 0 silent, 1 a message per stage and
        refinement round (and a tqdm bar over the refinement iterations
        when tqdm is installed), 2 also one per refinement iteration.

    Attributes
    ----------
    network_ : fastten.TwoLayerNet
        The fitted network (``save`` / ``load`` it as any other).
    coefs_ : list of two arrays
        ``[A1 (n_features, n_hidden), a2 (n_hidden, n_outputs)]``.
    intercepts_ : list of two arrays
        ``[b1 (n_hidden,), b2 (n_outputs,)]``.
    n_iter_ : int
        Levenberg-Marquardt iterations of the refinement (0 without it).
    loss_ : float
        The final training loss (half the mean squared error on
        standardised targets, ``diagnostics_["training_loss"]``).
    diagnostics_ : dict
        The fit's diagnostics record (docs/api.md, ``fastten.fit``).
    n_features_in_ : int
    feature_names_in_ : array of str
        Only when X had string column names (a pandas DataFrame).
    """

    def fit(self, X, y):
        """Fit the network to the data.

        Parameters
        ----------
        X : array_like or pandas.DataFrame, shape (n_samples, n_features)
            Real features, at least two rows; checked by scikit-learn's
            ``validate_data`` (which records ``n_features_in_`` and, for a
            DataFrame with string column names, ``feature_names_in_``).
        y : array_like, shape (n_samples,) or (n_samples, n_outputs)
            Numeric targets; with two dimensions the network has n_outputs
            outputs.

        Returns
        -------
        NNLiftRegressor
            self, fitted.
        """
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True,
                             ensure_min_samples=2)
        return self._fit_network(X, y, "regression")

    def predict(self, X):
        """The network's outputs at the rows of X.

        Parameters
        ----------
        X : array_like or pandas.DataFrame, shape (n_samples, n_features)
            The features the estimator was fitted on (same number, and same
            names for a DataFrame).

        Returns
        -------
        ndarray, shape (n_samples,) or (n_samples, n_outputs)
            The predictions; two-dimensional when y had two dimensions.
        """
        return self._outputs(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class NNLiftClassifier(ClassifierMixin, _NNLiftBase):
    """A two-layer network with one output (logit) per class, fitted by
    NN-LIFT and refined by the cross-entropy of the softmax of its outputs
    (``fastten.fit`` with ``task="classification"``), as a scikit-learn
    classifier.

    Every class needs at least two samples.

    Parameters
    ----------
    n_hidden : int >= 1, default 10
        As in ``NNLiftRegressor``.
    activation : str or fastten.activations.Activation, default "sigmoid"
        As in ``NNLiftRegressor``.
    input_model : {"gaussian", "standard", "product"} or ScoreFunction, \
default "gaussian"
        As in ``NNLiftRegressor``.
    init : {"tensor", "random"}, default "tensor"
        As in ``NNLiftRegressor``.
    method : {"auto", "orthogonal", "nonorthogonal", "power", "sketch"}, \
default "auto"
        As in ``NNLiftRegressor``.
    bias_method : {"moments", "fourier", "zero"}, default "moments"
        As in ``NNLiftRegressor``.
    control_variate : {"linear", "quadratic", "none"}, default "linear"
        As in ``NNLiftRegressor``.
    cross_fit : bool, default False
        As in ``NNLiftRegressor``.
    refine : bool, default True
        As in ``NNLiftRegressor``.
    alpha : float, default 0.0
        As in ``NNLiftRegressor``; the penalty is added to the mean
        cross-entropy.
    early_stopping : bool, default False
        As in ``NNLiftRegressor``; the held-out rows are stratified by
        class.
    validation_fraction : float, default 0.1
        As in ``NNLiftRegressor``.
    n_iter_no_change : int, default 10
        As in ``NNLiftRegressor``.
    ridge : float, default 1e-8
        As in ``NNLiftRegressor``.
    max_iter : int, default 50
        As in ``NNLiftRegressor``.
    n_rounds : int, default 6
        As in ``NNLiftRegressor``.
    random_state : None, int, numpy.random.Generator or \
numpy.random.RandomState, default None
        As in ``NNLiftRegressor``.
    n_threads : int or None, default None
        As in ``NNLiftRegressor``.
    blas_threads : int or None, default 1
        As in ``NNLiftRegressor``.
    verbose : int >= 0 or bool, default 0
        As in ``NNLiftRegressor``.

    Attributes
    ----------
    classes_ : array (n_classes,)
        The class labels, sorted.
    network_ : fastten.TwoLayerNet
        The fitted network; ``network_.classes`` is ``classes_``.
    coefs_ : list of two arrays
        ``[A1 (n_features, n_hidden), A2 (n_hidden, n_classes)]``.
    intercepts_ : list of two arrays
        ``[b1 (n_hidden,), b2 (n_classes,)]``.
    n_iter_, loss_, diagnostics_, n_features_in_, feature_names_in_
        As in ``NNLiftRegressor``; ``loss_`` is the mean cross-entropy.
    """

    def fit(self, X, y):
        """Fit the network to the data.

        Parameters
        ----------
        X : array_like or pandas.DataFrame, shape (n_samples, n_features)
            Real features, at least two rows; checked by scikit-learn's
            ``validate_data`` (which records ``n_features_in_`` and, for a
            DataFrame with string column names, ``feature_names_in_``).
        y : array_like, shape (n_samples,)
            Class labels of any type scikit-learn accepts for
            classification, at least two classes of at least two samples
            each.

        Returns
        -------
        NNLiftClassifier
            self, fitted.
        """
        X, y = validate_data(self, X, y, dtype=np.float64, ensure_min_samples=2)
        check_classification_targets(y)
        self._fit_network(X, y, "classification")
        self.classes_ = self.network_.classes
        return self

    def decision_function(self, X):
        """The network's logits at the rows of X.

        Parameters
        ----------
        X : array_like or pandas.DataFrame, shape (n_samples, n_features)
            The features the estimator was fitted on.

        Returns
        -------
        ndarray, shape (n_samples, n_classes) or (n_samples,)
            One logit per class; for two classes the logit of
            ``classes_[1]`` against ``classes_[0]``, (n_samples,), as
            scikit-learn's binary classifiers return it.
        """
        F = self._outputs(X)
        return F[:, 1] - F[:, 0] if F.shape[1] == 2 else F

    def predict_proba(self, X):
        """The class probabilities at the rows of X.

        Parameters
        ----------
        X : array_like or pandas.DataFrame, shape (n_samples, n_features)
            The features the estimator was fitted on.

        Returns
        -------
        ndarray, shape (n_samples, n_classes)
            The probabilities of ``classes_`` (the softmax of the logits);
            each row sums to one.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self.network_.predict_proba(X)

    def predict(self, X):
        """The most probable class at each row of X.

        Parameters
        ----------
        X : array_like or pandas.DataFrame, shape (n_samples, n_features)
            The features the estimator was fitted on.

        Returns
        -------
        ndarray, shape (n_samples,)
            Labels from ``classes_``: the class of the largest logit.
        """
        F = self._outputs(X)
        return self.classes_[np.argmax(F, axis=1)]
