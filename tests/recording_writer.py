"""A clu metric writer that keeps every logged scalar, for tests of the train loop."""

from clu import metric_writers


class Recorder(metric_writers.LoggingWriter):
    """Keeps every logged scalar by name and step (``scalars[name][step]``)."""

    def __init__(self):
        super().__init__()
        self.scalars = {}

    def write_scalars(self, step, scalars):
        for name, value in scalars.items():
            self.scalars.setdefault(name, {})[int(step)] = float(value)

    @property
    def losses(self):
        return self.scalars.get("loss", {})
