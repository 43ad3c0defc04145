"""Small files shipped with the device package (the demo recording)."""
