"""Coverage-guided fuzzing of the loader and the static stages with atheris (libFuzzer), optional.

``make fuzz-atheris`` (or ``python tests/adversarial/fuzz_atheris.py CORPUS_DIR -max_total_time=600``).
atheris is not a dependency of eeki-label: ``pip install atheris`` first; without it this script
says so and exits with code 0. The seed corpus is a few hundred models from the hypothesis
strategies of fuzz_models.py (written to CORPUS_DIR when it is empty). The property is the same:
a label or an EekiError, never another exception (libFuzzer then stops and writes ``crash-*``).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]


def _seed(corpus: Path, n: int = 300) -> None:
    from hypothesis import HealthCheck, given, settings

    from fuzz_models import mutated_model_files

    corpus.mkdir(parents=True, exist_ok=True)
    if any(corpus.iterdir()):
        return
    count = [0]

    @settings(max_examples=n, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(mutated_model_files())
    def write(data):
        count[0] += 1
        (corpus / f"seed-{count[0]:04d}.onnx").write_bytes(data)

    write()


def main() -> int:
    try:
        import atheris
    except ImportError:
        print("atheris is not installed (pip install atheris); nothing to do", file=sys.stderr)
        return 0
    with atheris.instrument_imports(include=["eeki_label"]):  # the code under test, before anything imports it
        import eeki_label.model_io  # noqa: F401
        import eeki_label.pipeline  # noqa: F401
        import eeki_label.profile.static  # noqa: F401
    from fuzz_models import check_file

    corpus = next((Path(a) for a in sys.argv[1:] if not a.startswith("-")), None)
    if corpus is not None:
        _seed(corpus)
    work = Path(tempfile.mkdtemp(prefix="eeki-atheris-")) / "model.onnx"

    def one_input(data: bytes) -> None:
        check_file(work, data, inprocess_inference=True)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
