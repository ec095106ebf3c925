"""Energy per inference, per device class: estimated from the static profile, or measured."""
