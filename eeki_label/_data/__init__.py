"""Resource packages: the top-level data folders (rules/, reference_models/, schemas/, data/energy/, examples/) mapped in by pyproject.toml."""
