"""Variational assimilation: quadratic inner-loop problems, minimizers, cost functions and the incremental driver."""
