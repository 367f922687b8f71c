"""Tutorial labs (`lab tutorial`): one runnable lab per topic of the seed articles on the socket API.

`model` says what a tutorial is (a folder: `tutorial.md` + `steps.py`) and finds them; `session` is
what a step works with; `runner` runs one in a lab of its own. The shipped ones are in `labs/`.
"""

from lab.tutorials.model import Step, Tutorial, TutorialError, find_tutorial, shipped_tutorials
from lab.tutorials.session import Session

__all__ = ["Session", "Step", "Tutorial", "TutorialError", "find_tutorial", "shipped_tutorials"]
