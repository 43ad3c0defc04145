"""Training side of instrument-ai: NSynth-format data, the Keras models, evaluation and experiments.

May import tensorflow, librosa and the rest, but only inside the functions that
need them, so that `instrument-ai --help` stays light.
"""
