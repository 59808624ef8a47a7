"""Every configuration key is documented in the README (a key added to the
schema without a line in the README fails here)."""

from pathlib import Path
from typing import get_args

from pydantic import BaseModel

from service.settings import Settings

README = (Path(__file__).parent.parent / "README.md").read_text()


def keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        nested = [
            t
            for t in (field.annotation, *get_args(field.annotation))
            if isinstance(t, type) and issubclass(t, BaseModel)
        ]
        if nested:
            annotation = str(field.annotation)
            sep = "[]." if "list" in annotation else ".<name>." if "dict" in annotation else "."
            out += keys(nested[0], key + sep)
        else:
            out.append(key)
    return out


def test_every_config_key_is_in_the_readme() -> None:
    all_keys = keys(Settings)
    assert "subscribers[].keywords" in all_keys and "email.smtp.host" in all_keys
    missing = [k for k in all_keys if f"`{k}`" not in README]
    assert not missing, f"document these keys in README.md: {missing}"


def test_readme_starts_with_the_two_commands() -> None:
    blocks = README.split("```sh\n")
    assert (
        blocks[1].startswith("python3 -m venv .venv")
        and "paperboy --config config/demo.yaml run --once" in blocks[1]
    )
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    test_command = blocks[2].split("```")[0].strip()
    assert test_command.endswith(".venv/bin/pytest")
    assert test_command in ci
