import re
from pathlib import Path

from service.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_documented_in_the_readme_with_its_default():
    rows = dict(re.findall(r"^\| `(RESMTNET_[A-Z_0-9]+)` \| `?([^`|]+?)`? \|", README.read_text(), flags=re.M))
    for name, field in Settings.model_fields.items():
        variable = f"RESMTNET_{name.upper()}"
        assert variable in rows, f"{variable} is missing from the README's settings table"
        if field.default is None:
            continue
        default = field.default.value if hasattr(field.default, "value") else field.default
        documented = rows[variable]
        if default == "":
            assert documented == "none", variable
        elif isinstance(default, bool):
            assert documented == str(default).lower(), variable
        elif isinstance(default, int | float):
            assert float(documented) == float(default), variable
        else:
            assert documented == str(default), variable
