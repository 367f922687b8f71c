"""What a tutorial is: a folder with the text a student reads and the steps that run its lab.

A tutorial is a folder `NN-slug/` holding two files, so a teacher can copy one and write the next:

- `tutorial.md`: a front matter between `---` lines (`number`, `title`, `summary`, `seed`, `kernel`,
  `topology`), then the text `lab tutorial show` prints, in a student's words;
- `steps.py`: `STEPS`, a list of `Step(title, run)`, where `run(session)` acts in the running lab
  and tells the `Session` (`lab.tutorials.session`) what it observed and checked.

The shipped tutorials are the folders of `lab/tutorials/labs/`; `lab tutorial run DIR` runs a folder
of one's own. Loading reads at most `MAX_TEXT_BYTES` of each file and says in one line (file, field,
value) what is wrong with a folder, without echoing its content.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lab.build.state import LabError

if TYPE_CHECKING:  # annotations only: the session module builds on this one
    from lab.tutorials.session import Session

MAX_TEXT_BYTES = 256 * 1024
FOLDER_PATTERN = re.compile(r"(\d{1,3})-([a-z0-9][a-z0-9-]{0,40})")
FRONT_MATTER_FIELDS = ("number", "title", "summary", "seed", "kernel", "topology")


class TutorialError(LabError):
    """A tutorial that cannot be found or loaded (bad folder, bad front matter, no STEPS): exit 2."""

    exit_code = 2


@dataclass(frozen=True)
class Step:
    """One step of a tutorial: a title the student sees, and what to do in the lab."""

    title: str
    run: Callable[[Session], None]


@dataclass(frozen=True)
class Tutorial:
    """A loaded tutorial. `seed` names the passage of the seed articles it follows, `kernel` the
    kernel functions it mirrors; `topology` is a shipped topology name or a file beside the text."""

    number: int
    slug: str
    title: str
    summary: str
    seed: str
    kernel: tuple[str, ...]
    topology: str
    text: str
    folder: Path
    steps: tuple[Step, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {"number": self.number, "slug": self.slug, "title": self.title, "summary": self.summary,
                "seed": self.seed, "kernel": list(self.kernel), "topology": self.topology}


def shipped_folder() -> Path:
    return Path(__file__).resolve().parent / "labs"


def read_bounded(path: Path) -> str:
    """The file's text, refused in one line (no content) if not a regular file, too large or not UTF-8."""
    if not path.is_file():
        raise TutorialError(f"{path}: missing (a tutorial folder holds tutorial.md, steps.py)")
    if path.stat().st_size > MAX_TEXT_BYTES:
        raise TutorialError(f"{path}: over {MAX_TEXT_BYTES} bytes")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TutorialError(f"{path}: not UTF-8 text") from None


def split_front_matter(path: Path, text: str) -> tuple[dict[str, Any], str]:
    """(front matter, body) of a tutorial.md."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise TutorialError(f"{path}:1: expected a front matter starting with a line '---'")
    for index in range(1, len(lines)):
        if lines[index].strip() == "---":
            try:
                data = yaml.safe_load("".join(lines[1:index])) or {}
            except yaml.YAMLError as error:
                line = getattr(getattr(error, "problem_mark", None), "line", 0) + 2
                raise TutorialError(f"{path}:{line}: front matter is not YAML") from None
            if not isinstance(data, dict):
                fields = ", ".join(FRONT_MATTER_FIELDS)
                raise TutorialError(f"{path}:2: front matter must be a mapping of {fields}")
            return data, "".join(lines[index + 1:]).strip() + "\n"
    raise TutorialError(f"{path}:1: front matter has no closing line '---'")


def _field(path: Path, data: dict[str, Any], key: str, kind: type) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TutorialError(f"{path}: front matter field {key}: expected {kind.__name__}, "
                            f"got {type(value).__name__}")
    return value


def load_tutorial(folder: Path, *, with_steps: bool = True) -> Tutorial:
    """The tutorial in `folder`; its steps.py is imported only `with_steps` (listing needs no import)."""
    match = FOLDER_PATTERN.fullmatch(folder.name)
    if match is None:
        raise TutorialError(f"{folder}: a tutorial folder is named NN-slug (digits, a dash, lowercase words)")
    text_path = folder / "tutorial.md"
    data, body = split_front_matter(text_path, read_bounded(text_path))
    unknown = sorted(set(data) - set(FRONT_MATTER_FIELDS))
    if unknown:
        raise TutorialError(f"{text_path}: unknown front matter field {unknown[0]!r} "
                            f"(fields: {', '.join(FRONT_MATTER_FIELDS)})")
    number = _field(text_path, data, "number", int)
    if number != int(match.group(1)):
        raise TutorialError(f"{text_path}: front matter number {number} differs from the folder's "
                            f"{int(match.group(1))}")
    kernel = data.get("kernel", [])
    if not isinstance(kernel, list) or not all(isinstance(k, str) for k in kernel):
        raise TutorialError(f"{text_path}: front matter field kernel: expected a list of function names")
    tutorial = Tutorial(
        number=number, slug=match.group(2), title=_field(text_path, data, "title", str),
        summary=_field(text_path, data, "summary", str), seed=_field(text_path, data, "seed", str),
        kernel=tuple(kernel), topology=_field(text_path, data, "topology", str), text=body, folder=folder)
    if not with_steps:
        return tutorial
    return Tutorial(**{**tutorial.__dict__, "steps": load_steps(folder / "steps.py")})


def load_steps(path: Path) -> tuple[Step, ...]:
    read_bounded(path)  # the same bounds as the text, before Python reads it
    module_name = f"nslab_tutorial_{path.parent.name.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise TutorialError(f"{path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise TutorialError(f"{path}:{error.lineno}: syntax error: {error.msg}") from None
    steps = getattr(module, "STEPS", None)
    if not isinstance(steps, list) or not steps or not all(isinstance(s, Step) for s in steps):
        raise TutorialError(f"{path}: expected STEPS, a non-empty list of lab.tutorials.Step")
    return tuple(steps)


def shipped_tutorials() -> list[Tutorial]:
    """The shipped tutorials in their order, without their steps."""
    tutorials = [load_tutorial(folder, with_steps=False) for folder in sorted(shipped_folder().iterdir())
                 if folder.is_dir() and FOLDER_PATTERN.fullmatch(folder.name)]
    return sorted(tutorials, key=lambda t: t.number)


def find_tutorial(name: str) -> Tutorial:
    """A shipped tutorial by number ("2") or slug ("two-queues"), or a folder of one's own (a path)."""
    path = Path(name)
    if "/" in name or (path.is_dir() and FOLDER_PATTERN.fullmatch(path.name)):
        return load_tutorial(path.resolve())
    for tutorial in shipped_tutorials():
        if name == tutorial.slug or (name.isdigit() and int(name) == tutorial.number):
            return load_tutorial(tutorial.folder)
    known = ", ".join(f"{t.number} {t.slug}" for t in shipped_tutorials())
    raise TutorialError(f"no tutorial {name!r} (tutorials: {known}; or a folder NN-slug/)")
