"""MedMNIST Classification Decathlon: benchmark AutoML systems on the ten MedMNIST subsets."""

__version__ = "0.1.0"
