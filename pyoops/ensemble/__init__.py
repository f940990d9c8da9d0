"""Ensemble methods on top of the assimilation layer: EDA, cycled twin experiments, member executors."""
