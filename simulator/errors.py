"""One error tree for the simulator: a bad scenario, trace or track fails with a message that says what to fix."""


class SimulatorError(Exception):
    """Base of every error raised by the simulator package."""


class ScenarioError(SimulatorError):
    """A scenario file is invalid; the message names the person, place or event to fix."""


class TraceError(SimulatorError):
    """A trace, truth or alerts file line is malformed; the message names the file and line."""


class ImportTrackError(SimulatorError):
    """A GPX or CSV track could not be turned into fixes."""
