"""Writing the reproductions' markdown results."""

import os

DISCUSSION_HEADING = "## Distance from the paper"


def write_text(path: str, text: str) -> None:
    """Writes ``text`` to ``path``, creating its folder first."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def write_keeping_discussion(path: str, text: str) -> None:
    """Writes the generated ``text`` to ``path``, followed by the written analysis of the file it
    replaces: everything from its ``DISCUSSION_HEADING`` on, so that regenerating a result keeps it."""
    discussion = ""
    if os.path.exists(path):
        with open(path) as f:
            previous = f.read()
        if DISCUSSION_HEADING in previous:
            discussion = "\n" + previous[previous.index(DISCUSSION_HEADING):]
    write_text(path, text + discussion)
