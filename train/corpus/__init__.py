"""The NSynth-format corpus: build units, the corpus builder, splits, qualities, and the NSynth readers.

Everything downstream reads notes through `nsynth.iter_notes`, so the real NSynth and a self-built corpus
run the same commands. The corpus may import sources; it never imports the trainer or the experiments.
"""
