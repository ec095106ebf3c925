import pytest

from eeki_label.errors import CatalogueError, UsageError
from eeki_label.rules import available_versions, grade, load_rules, select_reference, worse_than

RULES = load_rules()
BOUNDS = dict(RULES.thresholds)


def test_rule_file_is_versioned_and_hashed():
    assert RULES.version in available_versions()
    assert len(RULES.sha256) == 64
    assert [c for c, _ in RULES.thresholds] == list("ABCDEF")


@pytest.mark.parametrize("letter", list("ABCDEF"))
def test_grade_at_every_boundary(letter):
    """An index equal to a bound gets that class; a hair above it gets the next one."""
    nxt = "ABCDEFG"["ABCDEFG".index(letter) + 1]
    bound = BOUNDS[letter]
    assert grade(bound, RULES.thresholds) == letter
    assert grade(bound * (1 + 1e-9), RULES.thresholds) == nxt
    assert grade(bound * (1 - 1e-9), RULES.thresholds) == letter


def test_grade_extremes_and_invalid():
    assert grade(0.0, RULES.thresholds) == "A"
    assert grade(1e12, RULES.thresholds) == "G"
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError):
            grade(bad, RULES.thresholds)


def test_reference_model_itself_is_class_b():
    assert grade(1.0, RULES.thresholds) == "B"


def test_unknown_rules_version():
    with pytest.raises(CatalogueError, match="unknown rules version"):
        load_rules("0.0.1")


def test_worse_than():
    assert worse_than("D", "C") and not worse_than("C", "C") and not worse_than("A", "c")
    with pytest.raises(UsageError):
        worse_than("H", "C")


REFS = [("small", 60.0, 1.0), ("mid", 72.0, 3.0), ("big", 76.0, 10.0), ("nofit", 80.0, None)]


def select(declared):
    return select_reference(REFS, lambda r: r[2], lambda r: r[1], declared)


def test_reference_without_declared_quality_is_least_energy():
    s = select(None)
    assert s.reference[0] == "small" and s.considered == 3 and not s.quality_above_all


def test_reference_is_least_energy_at_or_above_declared_quality():
    assert select(70.0).reference[0] == "mid"
    assert select(72.0).reference[0] == "mid"  # equal quality qualifies
    assert select(72.1).reference[0] == "big"


def test_declared_quality_above_every_reference():
    s = select(99.0)
    assert s.reference[0] == "big" and s.quality_above_all
