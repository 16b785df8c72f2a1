"""Default model preparation: extraction, conversion, verification."""
