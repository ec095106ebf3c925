"""Data folder shipped as a resource package of eeki_label (see pyproject.toml); holds no code."""
