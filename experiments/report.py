"""Writing the reproductions' markdown results."""

import os


def write_text(path: str, text: str) -> None:
    """Writes ``text`` to ``path``, creating its folder first."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
