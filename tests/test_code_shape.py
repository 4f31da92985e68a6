"""benchmarks/code_shape.py, the command behind issue 13's before/after numbers, on a made-up tree."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "code_shape.py"


@pytest.fixture(scope="module")
def code_shape():
    spec = importlib.util.spec_from_file_location("code_shape", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cycles_inline_imports_and_long_functions_are_counted(code_shape, tmp_path):
    package = tmp_path / "tsnet_hf"
    package.mkdir()
    (package / "__init__.py").write_text("from .a import f\n")
    (package / "a.py").write_text("from . import b\n\n\ndef f():\n    return b.g()\n")
    (package / "b.py").write_text("def g():\n    from .a import f  # noqa\n    import json\n    return f, json\n")
    long_body = "".join(f"    x{i} = {i}\n" for i in range(70))
    (tmp_path / "app.py").write_text(f"def long():\n{long_body}    return 0\n" + "y = '" + "z" * 130 + "'\n")
    shape = code_shape.measure(tmp_path)
    assert shape["import_cycles"] == []  # b imports a only inside a function
    assert shape["import_cycles_with_function_imports"] == [["tsnet_hf.a", "tsnet_hf.b"]]
    assert shape["inline_imports"]["product"] == [1, 1]  # .a (the project's own), json (another package)
    assert shape["functions_over_60_lines"] == 1 and shape["longest_functions"][0] == ("app.py:long", 72)
    assert shape["lines_over_120"] == 1


def test_a_folder_that_is_not_a_checkout_is_one_sentence(code_shape, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        code_shape.main([str(tmp_path)])
    assert exit_info.value.code == 2 and "is not a tsnet-hf checkout" in capsys.readouterr().err
