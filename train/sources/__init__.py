"""Where notes come from: the source catalogue (sources.toml), fetching, and one importer per kind of source.

SoundFonts, WebAudioFont banks, SFZ instruments, recorded notes, synthesised notes and `other` sounds each
become `ImportedNote`s here. Sources never import the corpus assembly, the trainer or the experiments.
"""
