"""The bottom layer: small helpers every gkl package may import (stdlib and torch only)."""

from gkl.utils.errors import InputError

__all__ = ["InputError"]
