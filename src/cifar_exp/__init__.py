"""cifar-exp: hyperparameter studies for CIFAR-10 with Keras, Hydra, Optuna and MLflow."""

__version__ = "0.1.0"
