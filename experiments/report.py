"""Writing the reproductions' markdown results."""

import os
import shlex
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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


def command_line(script: str, argv: list[str] | None = None, drop: tuple[str, ...] = ()) -> str:
    """``python <script> <arguments>`` as a results file records it: the arguments (default
    ``sys.argv[1:]``) without those in ``drop``, each absolute path (alone or after ``=``) made
    relative to the repository, so that a results file names no folder of the machine it ran on."""
    def relative(arg: str) -> str:
        flag, sep, value = arg.rpartition("=") if "=" in arg else ("", "", arg)
        if os.path.isabs(value):
            value = os.path.relpath(value, ROOT)
        return shlex.quote(flag + sep + value)

    given = sys.argv[1:] if argv is None else argv
    return f"python {script} " + " ".join(relative(a) for a in given if a not in drop)


def write_section(path: str, heading: str, text: str) -> None:
    """Puts ``text`` (which starts with the line ``heading``, e.g. ``"## Ablation"``) in the
    markdown file ``path`` in place of its section of that heading: from the heading's line to
    the next heading of the same or a higher level outside code fences, or to the end. A file
    without the section gets it at its end; a missing file is created with it."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = []
    if os.path.exists(path):
        with open(path) as f:
            lines = f.read().split("\n")
    new = text.rstrip("\n").split("\n")
    if heading in lines:
        start = lines.index(heading)
        end, fenced = len(lines), False
        for i in range(start + 1, len(lines)):
            fenced ^= lines[i].startswith("```")
            depth = len(lines[i]) - len(lines[i].lstrip("#"))
            if not fenced and 0 < depth <= level and lines[i][depth:depth + 1] == " ":
                end = i
                break
        lines[start:end] = new + ([""] if end < len(lines) else [])
    else:
        while lines and not lines[-1].strip():
            lines.pop()
        lines += ([""] if lines else []) + new
    write_text(path, "\n".join(lines).rstrip("\n") + "\n")
