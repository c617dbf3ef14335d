"""The README's Python quickstart runs as written."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_quickstart_runs(tmp_path, monkeypatch, capsys):
    code = re.search(r"## Quickstart \(Python\)\s+```python\n(.*?)```", README.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README quickstart", "exec"), {"__name__": "__quickstart__"})
    out = capsys.readouterr().out
    assert "pgd20" in out and "sharpness:" in out
    assert (tmp_path / "runs" / "quickstart" / "best.pt").exists()
