"""Generated and documented artefacts stay in step with the code."""

import re

from support import ROOT
from eeki_label.errors import all_error_classes
from eeki_label.schema_gen import schemas


def test_committed_schemas_match_the_models():
    for name, text in schemas().items():
        committed = (ROOT / "schemas" / name).read_text()
        assert committed == text, f"schemas/{name} drifted: run python -m eeki_label.schema_gen"


def test_readme_exit_code_table_matches_errors():
    readme = (ROOT / "README.md").read_text()
    table = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", readme, flags=re.M))
    codes = {cls.exit_code for cls in all_error_classes()}
    assert codes <= {int(c) for c in table}, f"undocumented exit codes: {codes - {int(c) for c in table}}"
    assert {0, 2, 3} <= {int(c) for c in table}


def test_every_data_file_records_a_version():
    import json

    for path in list((ROOT / "rules").glob("*.json")) + list((ROOT / "reference_models").glob("*.json")) + list(
            (ROOT / "data" / "energy").glob("*.json")):
        assert "version" in json.loads(path.read_text()), path
