"""Drop-in replacements for classic teaching implementations of backpropagation.

``nielsen.Network``: network.py / network2.py of "Neural Networks and Deep Learning";
``pyimagesearch.NeuralNetwork``: the NumPy network of PyImageSearch's backpropagation tutorial.
Same APIs and data formats; the training runs vectorized through fastbp's kernels.
"""
