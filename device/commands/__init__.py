"""The thin command shells of `instrument-ai`: parse options, call the library, print.

The library (engine, frontend, bundle, resample, sources, lifecycle) lives one level
up and never imports from here.
"""
