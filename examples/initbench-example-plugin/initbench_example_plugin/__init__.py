"""An example initbench plugin: A from the principal directions of each layer's inputs.

A = the top-r eigenvectors of the layer's input covariance E[x x^T] (estimated on the
suite's calibration allowance), B = 0, base unchanged -- so the model starts exactly
at the pretrained function and the first updates move along the directions the
layer's inputs actually occupy.  (A simplified EVA without rank redistribution.)
"""

import torch

from initbench import LayerwiseInit


class ActivationPCA(LayerwiseInit):
    summary = "Example plugin: A = top-r eigenvectors of the input covariance, B = 0."
    paper = "initbench CONTRIBUTING.md example"
    code = "examples/initbench-example-plugin"
    statistic = "activation_covariance"

    def init_layer(self, weight, rank, scale, stats, generator):
        eigenvalues, eigenvectors = torch.linalg.eigh(stats)  # ascending order
        A = eigenvectors[:, -rank:].flip(-1).T.contiguous()  # (rank, in), largest first
        B = torch.zeros(weight.shape[0], rank)
        return A, B, None
