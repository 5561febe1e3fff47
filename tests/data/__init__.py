"""Real traces the tests read, kept in the repository with their licence and provenance
(``kineto/README.md``): a clone of the project passes its tests with nothing beside it."""

from pathlib import Path

KINETO_DATA = Path(__file__).resolve().parent / "kineto"
