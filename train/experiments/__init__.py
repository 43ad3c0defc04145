"""Judging models: evaluation, the study, the leave-one-source-out holdout, reports and model cards.

Experiments may import everything else in `train/`; nothing outside them imports an experiment except the
trainer's report at the end of a run and the command shells.
"""
