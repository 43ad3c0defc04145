"""Conversion of a trained run into one self-verifying int8 TFLite bundle."""
